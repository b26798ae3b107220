"""svcctl's host library: the code that runs on the nodes, as root, with Debian's python3 (3.9 and later).

Standard library only, and each module stands alone (none imports another), so that a host program is its
modules' text followed by the program's own (`svcctl.drivers.hostprograms.bundle`), and Ansible modules
can import the same files as `module_utils`. The controller imports them too (the verifiers), so each rule
exists once:

- `registry`: the ownership record on each node, its format, its lock discipline, and its command line;
- `verifiers`: the stored forms of a password (SCRAM-SHA-256, MariaDB's native hash, a Redis ACL digest);
- `run`: running a command without a shell;
- `marked`: svcctl's own block of lines in a file that is otherwise the user's.
"""
