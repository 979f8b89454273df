"""The approval policy: globs over `<server>__<tool>` and per server, and the `destructive` rule (hints)."""

from __future__ import annotations

from services.agent.approvals import ApprovalPolicy
from services.mcp.tools import is_destructive


def test_globs_and_the_destructive_rule() -> None:
    policy = ApprovalPolicy.of(["fs__write_*"], {"git": ["destructive"], "notes": ["edit_*"]})
    assert policy.needs("fs", "write_file", destructive=False)  # a glob names it, whatever its hints say
    assert not policy.needs("fs", "delete_file", destructive=True)  # `destructive` is git's rule only
    assert policy.needs("git", "reset", destructive=True)
    assert not policy.needs("git", "log", destructive=False)
    assert policy.needs("notes", "edit_file", destructive=False)
    everywhere = ApprovalPolicy.of(["destructive"], {})
    assert everywhere.needs("any", "tool", destructive=True) and not everywhere.needs("any", "tool", destructive=False)


def test_hints_read_with_mcp_defaults() -> None:
    assert is_destructive(None) and is_destructive({})
    assert not is_destructive({"readOnlyHint": True})
    assert not is_destructive({"readOnlyHint": True, "destructiveHint": True})  # read-only wins: nothing to destroy
    assert not is_destructive({"destructiveHint": False})
    assert is_destructive({"destructiveHint": True}) and is_destructive({"idempotentHint": True})
