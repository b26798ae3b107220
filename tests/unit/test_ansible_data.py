"""Variables handed to Ansible are data: loaded by ansible-core's own loader and templated, nothing runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

from svcctl.apply.ansible_data import unsafe_yaml, write_unsafe


def hostile(marker: Path) -> dict[str, object]:
    pipe = f"{{{{ lookup('pipe', 'touch {marker}') }}}}"
    return {
        "svcctl_environment": pipe,
        "identity": "keys/" + pipe,
        pipe: {"attrs": {"acl": [f"{{% if lookup('pipe', 'touch {marker}') %}}{{% endif %}}", "~*"]}},
        "plain": 'é\u202e\n\t"quoted" \\ back \U0001f600',
        "numbers": [0, 1.5, True, False, None],
        # strings a tagged scalar would lose: `!unsafe "15"` was the int 15, "" None, "*" a load error
        "looks_typed": ["15", "1.5", "0x1f", "true", "yes", "null", "~", "", "2001-01-01", "<<"],
        "one_character": ["*", "&", "!", "=", "-", "?", ":", "|", ">", "@", "%", "{", "}", "#"],
        "*": {"&": "=", "15": "", "true": ["null"]},
    }


def test_every_value_survives_ansibles_loader_unchanged(tmp_path: Path) -> None:
    value = hostile(tmp_path / "marker")
    path = write_unsafe(tmp_path / "vars.yml", value)
    assert DataLoader().load_from_file(str(path), trusted_as_template=True) == value
    assert path.stat().st_mode & 0o777 == 0o600


def test_templating_the_loaded_values_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = write_unsafe(tmp_path / "vars.yml", hostile(marker))
    loaded = DataLoader().load_from_file(str(path), trusted_as_template=True)
    templar = Templar(loader=DataLoader(), variables=loaded)
    rendered = templar.template(loaded)
    assert rendered == hostile(marker)
    assert not marker.exists()


def test_without_the_tag_the_same_file_would_run_the_command(tmp_path: Path) -> None:
    """The control: what the tag prevents really happens without it, so the test above can fail."""
    marker = tmp_path / "marker"
    text = unsafe_yaml(hostile(marker)).replace("!unsafe ", "")
    (tmp_path / "vars.yml").write_text(text)
    loaded = DataLoader().load_from_file(str(tmp_path / "vars.yml"), trusted_as_template=True)
    Templar(loader=DataLoader(), variables=loaded).template(loaded["identity"])
    assert marker.exists()


def test_an_existing_file_is_never_overwritten_or_followed(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.write_text("keep")
    (tmp_path / "vars.yml").symlink_to(target)
    with pytest.raises(FileExistsError):
        write_unsafe(tmp_path / "vars.yml", {"a": "b"})
    assert target.read_text() == "keep"


def test_only_json_like_data_is_accepted() -> None:
    assert unsafe_yaml({"k": ["v", 1]}) == '!unsafe {"k": !unsafe ["v", 1]}'
    with pytest.raises(TypeError):
        unsafe_yaml({"k": object()})
