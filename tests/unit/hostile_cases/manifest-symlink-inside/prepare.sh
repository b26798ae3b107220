# git cannot hold a symlink out of the case folder: make it here ($1 is the folder's parent)
set -e
mkdir real && ln -s real apps
