"""svcctl: declare database services in Git, plan and apply them on SSH hosts, tunnel to them."""

__version__ = "0.1.0"
