"""The generated report: sections of text, tables, figures and a claims table, as Markdown and HTML."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from losstopo import evidence
from losstopo.io import save_json, save_text
from losstopo.report_html import render_html
from losstopo.stats import TestResult

CLAIM_COLUMNS = ["#", "claim", "verdict", "p (adjusted)", "min. attainable p", "converged", "null rate",
                 "unit (n)", "data"]


def _number(value) -> float | None:
    """JSON number or null (NaN and inf are not JSON)."""
    return float(value) if value is not None and math.isfinite(value) else None


def _fmt(value: float, spec: str = ".3g") -> str:
    return "—" if value is None or not math.isfinite(value) else format(value, spec)


@dataclass
class Claim:
    """One paper claim as tested here. ``verdict``, ``p_adjusted`` and ``adjustment`` are set for the
    whole report at once by :func:`finalise` (one multiple-testing family per report)."""

    claim: str
    paper_evidence: str
    result: TestResult
    data_source: str
    profile: str
    unit: str  # the independent unit one value of the test belongs to (network, set of minima, teacher...)
    converged_fraction: float  # of the claim's inputs that met their convergence rule (NaN: not measured)
    null_rate: float  # the procedure's rejection rate on its null model at this n
    null_model: str
    premise: str = ""
    premise_ok: bool | None = None  # None: the claim has no premise
    note: str = ""
    verdict: str = ""
    p_adjusted: float = float("nan")
    adjustment: str = ""
    # Where the tested values' data came from: a DataProvenance.as_dict() (losstopo.provenance), a list of them when
    # the claim spans datasets, None where the records predate it (or a test claim has none). ``data_source`` is
    # its label, the words the claims table prints.
    data: dict | list[dict] | None = None

    def row(self, number: int) -> list[str]:
        r = self.result
        return [str(number), self.claim, f"**{self.verdict}**", f"{_fmt(r.p_value)} ({_fmt(self.p_adjusted)})",
                _fmt(r.min_attainable_p), _fmt(self.converged_fraction, ".0%"), _fmt(self.null_rate, ".3f"),
                f"{self.unit} ({r.n})", self.data_source]

    def details(self, number: int) -> str:
        r = self.result
        premise = f" Premise: {self.premise} ({'holds' if self.premise_ok else 'fails'})." if self.premise else ""
        return (f"{number}. **{self.claim}**: *{self.verdict}*. Paper: {self.paper_evidence}. Test: {r.test}, "
                f"statistic {_fmt(r.statistic)}, {r.effect_name} = {_fmt(r.effect_size)}, p = {_fmt(r.p_value)}, "
                f"opposite direction p = {_fmt(r.p_opposite)}; {self.adjustment}. Null model: {self.null_model}."
                f"{premise} {self.note}".rstrip())

    def as_dict(self) -> dict:
        r = self.result
        return {"claim": self.claim, "paper_evidence": self.paper_evidence, "verdict": self.verdict,
                "test": r.test, "statistic": _number(r.statistic), "effect_size": _number(r.effect_size),
                "effect_name": r.effect_name, "n": r.n, "p_value": _number(r.p_value),
                "p_opposite": _number(r.p_opposite), "p_adjusted": _number(self.p_adjusted),
                "adjustment": self.adjustment, "min_attainable_p": _number(r.min_attainable_p),
                "converged_fraction": _number(self.converged_fraction), "null_rate": _number(self.null_rate),
                "null_model": self.null_model, "unit": self.unit, "premise": self.premise or None,
                "premise_ok": self.premise_ok, "data_source": self.data_source,
                "data": self.data if self.data is not None else "not recorded", "profile": self.profile,
                "note": self.note}


def finalise(claims: list[Claim], alpha: float = evidence.ALPHA) -> None:
    """Gates every claim (convergence, premise, attainable p), adjusts the p-values of the claims that
    passed with Holm's method over that one family, and sets each verdict."""
    gates = [evidence.gate(c.converged_fraction, c.premise_ok, c.result.min_attainable_p, alpha) for c in claims]
    family = [i for i, (c, g) in enumerate(zip(claims, gates)) if g is None and math.isfinite(c.result.p_value)]
    adjusted = evidence.adjust([claims[i].result.p_value for i in family])
    adjusted_opposite = evidence.adjust([claims[i].result.p_opposite for i in family])
    words = f"Holm over the {len(family)} claims of this report that passed the gates"
    for claim, gate in zip(claims, gates):
        claim.verdict, claim.p_adjusted = gate or "inconclusive", float("nan")
        claim.adjustment = f"not adjusted (verdict {gate!r} before testing); {words}" if gate else words
    for i, p, q in zip(family, adjusted, adjusted_opposite):
        claims[i].p_adjusted = p
        claims[i].verdict = evidence.decide(p, q, claims[i].null_rate, alpha)


@dataclass
class Section:
    title: str
    blocks: list[str] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)

    def add_text(self, text: str) -> None:
        self.blocks.append(text)

    def add_table(self, header: list[str], rows: list[list]) -> None:
        self.blocks.append(markdown_table(header, rows))

    def add_figure(self, path: Path, caption: str) -> None:
        self.figures.append(Path(path))
        self.blocks.append(f"![{caption}]({{figures}}/{Path(path).name})\n\n*{caption}*")

    def add_claim(self, claim: Claim) -> None:
        self.claims.append(claim)


def markdown_table(header: list[str], rows: list[list]) -> str:
    def cell(value) -> str:
        return str(value).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(cell, row)) + " |" for row in rows]
    return "\n".join(lines)


def render(sections: list[Section], out_dir: Path, figures_dir: Path, preamble: str) -> Path:
    """Writes report.md, report.html and claims.json into out_dir; returns the Markdown path."""
    figures_rel = os.path.relpath(figures_dir, out_dir)
    claims = [c for s in sections for c in s.claims]
    finalise(claims)
    counts = {v: sum(c.verdict == v for c in claims) for v in evidence.VERDICTS}
    parts = [preamble, "## Claims",
             "Verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items() if n) + f" ({len(claims)} claims).",
             markdown_table(CLAIM_COLUMNS, [c.row(i + 1) for i, c in enumerate(claims)]),
             "Legend: " + "; ".join(f"*{v}*: {text}" for v, text in evidence.VERDICTS.items()) + ".",
             "### Claim details", "\n".join(c.details(i + 1) for i, c in enumerate(claims))]
    for section in sections:
        parts.append(f"## {section.title}")
        parts += [block.replace("{figures}", figures_rel) for block in section.blocks]
    text = "\n\n".join(parts) + "\n"
    md_path = Path(out_dir) / "report.md"
    save_text(text, md_path)
    save_text(render_html(preamble, sections, claims, figures_rel), Path(out_dir) / "report.html")
    save_json([c.as_dict() for c in claims], Path(out_dir) / "claims.json")
    return md_path
