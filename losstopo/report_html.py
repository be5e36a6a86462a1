"""report.html: a summary per experiment, a claims table with one line per claim (verdict badges, details
folded), the sections with their figures, and a navigation bar; one file with its CSS inline (no CDN), the
figures beside it. Generated from the same sections and claims as report.md."""

from __future__ import annotations

import html
import re

import markdown

from losstopo.provenance import short_data

BADGE_COLOURS = {"supported": "#1a7f37", "contradicted": "#cf222e", "inconclusive": "#9a6700",
                 "underpowered": "#6e7781", "not converged": "#8250df", "premise failed": "#bc4c00"}

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328;line-height:1.45}
nav{position:sticky;top:0;background:#f6f8fa;border-bottom:1px solid #d0d7de;padding:6px 16px;z-index:2;
    display:flex;flex-wrap:wrap;gap:4px 14px;font-size:90%}
nav a{color:#0969da;text-decoration:none} nav a:hover{text-decoration:underline}
main{max-width:1200px;margin:auto;padding:0 16px 40px}
table{border-collapse:collapse;font-size:88%;margin:8px 0;display:block;overflow-x:auto}
td,th{border:1px solid #d0d7de;padding:3px 7px;vertical-align:top} th{background:#f6f8fa}
img{max-width:100%;height:auto;border:1px solid #eee}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;color:#fff;font-size:85%;white-space:nowrap}
.claims td.claim{min-width:280px} details summary{cursor:pointer;color:#0969da}
.summary td{min-width:90px} .muted{color:#57606a;font-size:90%}
.broken{background:#ffebe9;border:1px solid #cf222e;margin:0;padding:6px 16px}
@media (max-width:800px){main{padding:0 8px} table{font-size:80%}}
"""


# After the page loads: the count of figures and of those that failed to load, on <body> (a browser test reads
# them) and, where one failed, a banner saying so at the top of the page.
IMAGE_CHECK = """
window.addEventListener('load', function () {
  var images = document.images, broken = 0;
  for (var i = 0; i < images.length; i++) { if (!images[i].complete || images[i].naturalWidth === 0) broken++; }
  document.body.setAttribute('data-images', images.length);
  document.body.setAttribute('data-broken-images', broken);
  if (broken > 0) {
    var note = document.createElement('p');
    note.className = 'broken';
    note.textContent = broken + ' of ' + images.length + ' figures did not load: open report.html from its own ' +
                       'folder, with figures/ beside it.';
    document.body.insertBefore(note, document.body.firstChild);
  }
});
"""


def badge(verdict: str) -> str:
    colour = BADGE_COLOURS.get(verdict, "#57606a")
    return f"<span class='badge' style='background:{colour}'>{html.escape(verdict)}</span>"


def short_source(claim) -> str:
    """A claim's data in a few words for a table cell (its full label goes in the tooltip)."""
    return short_data(claim.data, claim.data_source.split(" (")[0][:60])


def slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "section"


def _md(text: str) -> str:
    return markdown.markdown(text, extensions=["tables"])


def render_html(preamble: str, sections, claims, figures_rel: str) -> str:
    """The page; ``claims`` are the sections' claims in order, already finalised (verdicts set)."""
    numbers = {id(c): i + 1 for i, c in enumerate(claims)}
    nav = ["<a href='#summary'>Summary</a>", "<a href='#claims'>Claims</a>"]
    nav += [f"<a href='#{slug(s.title)}'>{html.escape(s.title.split(' (')[0])}</a>" for s in sections]
    summary_rows = []
    for section in sections:
        counts = {}
        for claim in section.claims:
            counts[claim.verdict] = counts.get(claim.verdict, 0) + 1
        verdicts = " ".join(f"{badge(v)}&nbsp;×{n}" for v, n in counts.items()) or "<span class='muted'>no claims</span>"
        sources = sorted({short_source(c) for c in section.claims})
        claim_links = ", ".join(f"<a href='#claim-{numbers[id(c)]}'>{numbers[id(c)]}</a>" for c in section.claims)
        summary_rows.append(f"<tr><td><a href='#{slug(section.title)}'>{html.escape(section.title)}</a></td>"
                            f"<td>{verdicts}</td><td>{html.escape('; '.join(sources)) or '—'}</td>"
                            f"<td>{claim_links or '—'}</td></tr>")
    claim_rows = []
    for claim in claims:
        n, r = numbers[id(claim)], claim.result
        claim_rows.append(
            f"<tr id='claim-{n}'><td>{n}</td><td class='claim'>{html.escape(claim.claim)}"
            f"<details><summary>details</summary>{_md(claim.details(n))}</details></td>"
            f"<td>{badge(claim.verdict)}</td><td>{_p(r.p_value)} ({_p(claim.p_adjusted)})</td>"
            f"<td>{html.escape(claim.unit)} ({r.n})</td>"
            f"<td title='{html.escape(claim.data_source, quote=True)}'>{html.escape(short_source(claim))}</td></tr>")
    body = [f"<nav>{' '.join(nav)}</nav><main>", _md(preamble),
            "<h2 id='summary'>Summary</h2>",
            "<table class='summary'><tr><th>experiment (the question)</th><th>verdicts</th><th>data</th>"
            "<th>claims</th></tr>" + "".join(summary_rows) + "</table>",
            "<h2 id='claims'>Claims</h2>",
            "<table class='claims'><tr><th>#</th><th>claim</th><th>verdict</th><th>p (adjusted)</th>"
            "<th>unit (n)</th><th>data</th></tr>" + "".join(claim_rows) + "</table>"]
    for section in sections:
        body.append(f"<section id='{slug(section.title)}'><h2>{html.escape(section.title)}</h2>")
        body += [_md(block.replace("{figures}", figures_rel)) for block in section.blocks]
        body.append("</section>")
    body.append("</main>")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>losstopo report</title>"
            f"<style>{STYLE}</style><script>{IMAGE_CHECK}</script></head><body>{''.join(body)}</body></html>")


def _p(value) -> str:
    return "—" if value is None or value != value else f"{value:.3g}"
