"""`python -m svcctl`: the same as the `svcctl` command."""

from svcctl.cli import main

main()
