"""The generated report: sections of text, tables, figures and a claims table, as Markdown and HTML."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import markdown

from losstopo.io import save_json, save_text
from losstopo.stats import TestResult

CLAIM_COLUMNS = ["claim", "paper's evidence", "test", "statistic", "p-value", "effect size", "verdict",
                 "data source", "profile", "note"]


@dataclass
class Claim:
    claim: str
    paper_evidence: str
    result: TestResult
    verdict: str
    data_source: str
    profile: str
    note: str = ""

    def row(self) -> list[str]:
        r = self.result
        return [self.claim, self.paper_evidence, f"{r.test}, n={r.n}", f"{r.statistic:.3f}", f"{r.p_value:.3g}",
                f"{r.effect_name}={r.effect_size:.3f}", f"**{self.verdict}**", self.data_source, self.profile, self.note]

    def as_dict(self) -> dict:
        return {"claim": self.claim, "paper_evidence": self.paper_evidence, **self.result.as_dict(),
                "verdict": self.verdict, "data_source": self.data_source, "profile": self.profile, "note": self.note}


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
    parts = [preamble, "## Claims", markdown_table(CLAIM_COLUMNS, [c.row() for c in claims])]
    for section in sections:
        parts.append(f"## {section.title}")
        parts += [block.replace("{figures}", figures_rel) for block in section.blocks]
    text = "\n\n".join(parts) + "\n"
    md_path = Path(out_dir) / "report.md"
    save_text(text, md_path)
    body = markdown.markdown(text, extensions=["tables"])
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>losstopo report</title>"
            f"<style>body{{font-family:sans-serif;max-width:1100px;margin:auto}}table{{border-collapse:collapse;font-size:90%}}"
            f"td,th{{border:1px solid #ccc;padding:3px 6px}}img{{max-width:100%}}</style></head><body>{body}</body></html>")
    save_text(page, Path(out_dir) / "report.html")
    save_json([c.as_dict() for c in claims], Path(out_dir) / "claims.json")
    return md_path
