# git cannot hold a symlink out of the case folder: make it here ($1 is the folder's parent)
set -e
mkdir -p ../outside && printf "an unrelated file\nA=1\n" > ../outside/notes.txt
ln -s ../outside apps
