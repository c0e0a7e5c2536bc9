"""Ground truth about layout edits in a mini-VSC build: which edits sit under which seconds of a query, and the
rank of each true reference (shared by ``benchmarks.layout_eval`` and ``benchmarks.evaluate``)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

LAYOUT_EDITS = {"hstack", "vstack", "picture_in_picture", "pad", "rotate90"}
ORIENTATION_EDITS = {"rotate90", "vflip"}  # what turned and flipped windows undo
SPLIT_EDITS = {"hstack", "vstack", "picture_in_picture"}
RANK_EDITS = ("hstack", "vstack", "picture_in_picture", "rotate90", "pad")


def layout_truth(dataset: Path) -> dict[str, list[tuple[float, float, set[str]]]]:
    """Per query: (start, end, layout and orientation edits) of each part, from dataset.json (query-wide edits apply to every part)."""
    plan = json.loads((dataset / "dataset.json").read_text())
    out = {}
    for query_id, spec in (plan["queries"].items() if isinstance(plan["queries"], dict) else plan["queries"]):
        num, den = (float(x) for x in str(spec["fps"]).split("/")) if "/" in str(spec["fps"]) else (float(spec["fps"]), 1.0)
        fps, t, parts = num / den, 0.0, []
        query_edits = {e["name"] if isinstance(e, dict) else e for e in spec.get("query_edits", [])}
        for part in spec["parts"]:
            length = part["n_frames"] / fps
            names = {e["name"] for e in part["edits"]} | query_edits
            parts.append((t, t + length, names & (LAYOUT_EDITS | ORIENTATION_EDITS)))
            t += length
        out[query_id] = parts
    return out


def true_ref_ranks(candidates, gt_pairs) -> dict[tuple[str, str], int]:
    """Rank (1 = first) of each true reference among its query's references by pair score, other true references skipped."""
    truth = defaultdict(set)
    for q, r in gt_pairs:
        truth[q].add(r)
    by_query = defaultdict(list)
    for c in sorted(candidates, key=lambda c: -c.score):
        by_query[c.query_id].append(c.ref_id)
    ranks = {}
    for q, refs in truth.items():
        for r in refs:
            listed = [x for x in by_query.get(q, []) if x == r or x not in refs]
            ranks[(q, r)] = listed.index(r) + 1 if r in listed else 10**6
    return ranks
