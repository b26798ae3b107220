"""`python -m svcctl`: the same as the `svcctl` command."""

from svcctl.launcher import main

main()
