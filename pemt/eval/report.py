"""The near-duplicate evaluation as Markdown: a summary per method and vector, then recall@1 per
transform family and strength."""

from __future__ import annotations

from collections.abc import Sequence

from pemt.eval.clips import TRANSFORMS
from pemt.eval.neardup import NeardupSet, Result

__all__ = ["markdown"]


def _cell(r: Result, key: str, k: str) -> str:
    v = r.recall.get(key, {}).get(k)
    return "–" if v is None else f"{v:.2f}"


def markdown(
    results: Sequence[Result], nset: NeardupSet, title: str = "Near-duplicate search"
) -> str:
    req = nset.request
    n_src = sum(g.kind == "source" for g in nset.gallery)
    fams = list(dict.fromkeys(q.family for q in nset.queries))
    strengths = list(dict.fromkeys(q.strength for q in nset.queries))
    lines = [
        f"## {title}",
        "",
        f"Gallery: {len(nset.gallery)} clips ({n_src} sources: {req.get('real', 0)} real requested, "
        f"{req.get('generated', 0)} generated; {len(nset.gallery) - n_src} distractors). "
        f"Queries: {len(nset.queries)} (each source through {len(fams)} families x "
        f"{len(strengths)} strengths; the audio family only for sources with sound). "
        "Rank: items scored above the source plus ties; audio vectors count sources with sound only.",
        "",
        "| method | vector | "
        + " | ".join(f"{s} R@1 | {s} R@10" for s in strengths)
        + " | all R@1 | all R@10 |",
        "| --- | --- | " + " | ".join("---: | ---:" for _ in strengths) + " | ---: | ---: |",
    ]
    for r in results:
        cells = [f"{_cell(r, s, 'r@1')} | {_cell(r, s, 'r@10')}" for s in strengths]
        lines.append(f"| {r.method} | {r.vector} | " + " | ".join(cells)
                     + f" | {_cell(r, 'all', 'r@1')} | {_cell(r, 'all', 'r@10')} |")  # fmt: skip
    lines += ["", "recall@1 per family (mild / strong):", ""]
    header = (
        "| family | edit (mild; strong) | "
        + " | ".join(f"{r.method} {r.vector}" for r in results)
        + " |"
    )
    lines += [header, "| --- | --- | " + " | ".join("---:" for _ in results) + " |"]
    for fam in fams:
        what = "; ".join(TRANSFORMS[(fam, s)].what for s in strengths if (fam, s) in TRANSFORMS)
        cells = [" / ".join(_cell(r, f"{fam}/{s}", "r@1") for s in strengths) for r in results]
        lines.append(f"| {fam} | {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
