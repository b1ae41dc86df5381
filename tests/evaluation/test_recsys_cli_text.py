"""``tailorshot evaluate recsys`` text output: every sub-population in the JSON gets its table."""

from __future__ import annotations

import pytest

from api.cli.recsys import _echo_protocol


def _part(n: int, recall: float) -> dict[str, object]:
    return {
        "n_users": n,
        "recall_at_10_ease": recall,
        "recall_at_10_ease_ci95": [recall - 0.1, recall + 0.1],
        "ndcg_at_10_ease": recall / 2,
        "ndcg_at_10_ease_ci95": [recall / 2 - 0.05, recall / 2 + 0.05],
    }


def test_seen_and_unseen_targets_are_printed_after_cold_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    summary = {
        **_part(10, 0.5),
        "cold_start": _part(2, 0.25),
        "target_seen": _part(6, 0.75),
        "target_unseen": _part(4, 0.125),
    }
    _echo_protocol("leave_last_out", summary)
    out = capsys.readouterr().out
    heads = [line for line in out.splitlines() if line and not line.startswith(" ")]
    assert heads == [
        "leave_last_out: 10 shoppers",
        "leave_last_out / cold start: 2 shoppers",
        "leave_last_out / target seen before: 6 shoppers",
        "leave_last_out / target new to the shopper: 4 shoppers",
    ]
    assert "recall@10 0.750 [0.650, 0.850]" in out and "recall@10 0.125 [0.025, 0.225]" in out


def test_unreachable_repurchases_are_said_under_their_table(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _echo_protocol("leave_last_out", {**_part(10, 0.5), "n_targets_excluded": 3})
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "leave_last_out: 10 shoppers"
    assert out[2] == (
        "  3 of them bought again a product bought before "
        "(excluded for every recommender: unreachable)"
    )
    _echo_protocol("time_split", {**_part(4, 0.5), "n_targets_excluded": 0})
    assert "unreachable" not in capsys.readouterr().out
