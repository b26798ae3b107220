"""svcctl's Ansible project (apply.yml, tasks, templates, modules, host files), installed as svcctl.playbooks.

This file only makes the directory a package, so that importlib.resources finds it in a wheel and in an
editable install alike; Ansible ignores it.
"""
