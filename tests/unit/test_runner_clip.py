"""How the runner shortens a task's or a host's message: the verdict at the end survives a long banner."""

from __future__ import annotations

from svcctl.apply.runner import MESSAGE_LIMIT, clip

# What Ansible reported for lab-1 when its known_hosts pinned another key (paths shortened).
CHANGED_KEY = (
    "Task failed: Failed to connect to the host via ssh: " + "@" * 59 + "\r\n"
    "@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\r\n" + "@" * 59 + "\r\n"
    "IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\r\n"
    "Someone could be eavesdropping on you right now (man-in-the-middle attack)!\r\n"
    "It is also possible that a host key has just been changed.\r\n"
    "The fingerprint for the ED25519 key sent by the remote host is\n"
    "SHA256:jfmrDkG+br+JIPi63EbFGQwU25xrl+X+DIuxP6XYHUg.\r\n"
    "Please contact your system administrator.\r\n"
    "Add correct host key in /tmp/known_hosts to get rid of this message.\r\n"
    "Offending ED25519 key in /tmp/known_hosts:1\r\n"
    "  remove with:\r\n"
    '  ssh-keygen -f "/tmp/known_hosts" -R "10.211.37.11"\r\n'
    "Host key for 10.211.37.11 has changed and you have requested strict checking.\r\n"
    "Host key verification failed."
)


def test_a_short_message_is_kept_whole_with_plain_newlines() -> None:
    assert clip("  one\r\ntwo \n") == "one\ntwo"


def test_a_long_message_keeps_its_start_and_its_last_whole_lines() -> None:
    assert len(CHANGED_KEY) > MESSAGE_LIMIT
    short = clip(CHANGED_KEY)
    assert len(short) <= MESSAGE_LIMIT + len(" [...]\n")
    assert "\r" not in short
    first, rest = short.split(" [...]\n")
    assert first.startswith("Task failed: Failed to connect to the host via ssh: @@@")
    assert rest.endswith("has changed and you have requested strict checking.\nHost key verification failed.")
    assert CHANGED_KEY.replace("\r\n", "\n").endswith(rest)  # the tail is verbatim
    assert rest.split("\n")[0] in CHANGED_KEY.replace("\r\n", "\n").split("\n")  # and starts at a line


def test_one_long_line_is_cut_at_both_ends() -> None:
    text = "a" * 400 + "b" * 400
    short = clip(text)
    assert short.startswith("a" * (MESSAGE_LIMIT // 4) + " [...]\n") and short.endswith("b" * 300)
    assert len(short) <= MESSAGE_LIMIT + len(" [...]\n")
