"""report.html: summary per experiment, one line per claim with a verdict badge and folded details, figures
inline, a navigation bar; parsed back with the standard library's HTML parser."""

import re
import shutil
import subprocess
from html.parser import HTMLParser

import matplotlib.pyplot as plt
import pytest

from losstopo.evidence import trend_test
from losstopo.report import Claim, Section, render


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids, self.links, self.images, self.badges, self.details = set(), [], [], [], 0
        self._in_badge = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href", "").startswith("#"):
            self.links.append(attrs["href"][1:])
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "details":
            self.details += 1
        self._in_badge = tag == "span" and attrs.get("class") == "badge"

    def handle_data(self, data):
        if self._in_badge:
            self.badges.append(data)
            self._in_badge = False


def _section(title, claims, figure=None):
    section = Section(title)
    section.add_text("Data: **offline copy mnist.npz (60000 train / 10000 test real images)**.")
    if figure is not None:
        section.add_figure(figure, "A figure (Fig. 1)")
    for name, values in claims:
        section.add_claim(Claim(name, "Fig. 1", trend_test([1, 2, 3, 4, 5, 6], values), 
                                "offline copy mnist.npz (60000 train / 10000 test real images)", "test",
                                "set of minima", 1.0, 0.04, "iid", note="a long note " * 30))
    return section


def test_report_html_has_a_summary_badges_folded_details_figures_and_working_links(tmp_path):
    figures = tmp_path / "figures"
    figures.mkdir()
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    fig.savefig(figures / "one.png")
    plt.close(fig)
    sections = [_section("FC depth sweep (Fig. 2)", [("decreases", [6, 5, 4, 3, 2, 1]),
                                                     ("increases", [1, 2, 3, 4, 5, 6])], figures / "one.png"),
                _section("Permutation barrier (Fig. 3)", [("flat", [1, 3, 2, 2, 3, 1])])]
    render(sections, tmp_path / "report", figures, "# losstopo report\n\nProfile `test`.")
    page = _Page()
    page.feed((tmp_path / "report" / "report.html").read_text())
    assert {"summary", "claims", "claim-1", "claim-2", "claim-3", "fc-depth-sweep-fig-2",
            "permutation-barrier-fig-3"} <= page.ids
    assert set(page.links) <= page.ids  # every in-page link has its target
    assert page.details == 3  # each claim's details folded
    # one badge per claim row plus the summary's: supported, contradicted, inconclusive
    assert sorted(page.badges) == sorted(["supported", "contradicted", "inconclusive"] * 2)
    assert page.images == ["../figures/one.png"] and (tmp_path / "report" / page.images[0]).is_file()
    text = (tmp_path / "report" / "report.html").read_text()
    assert "http://" not in text and "https://" not in text  # nothing fetched from elsewhere


def _chromium() -> str | None:
    return next((found for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
                 if (found := shutil.which(name))), None)


def _headless(browser: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                           "--virtual-time-budget=10000", *args], capture_output=True, text=True, timeout=300)


def test_the_report_renders_in_headless_chromium_with_every_figure_loaded(tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium on this machine (.ci/run installs the distribution's chromium package where it can)")
    figures = tmp_path / "figures"
    figures.mkdir()
    for name in ("one", "two"):
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        fig.savefig(figures / f"{name}.png")
        plt.close(fig)
    sections = [_section("FC depth sweep (Fig. 2)", [("decreases", [6, 5, 4, 3, 2, 1])], figures / "one.png"),
                _section("Permutation barrier (Fig. 3)", [("flat", [1, 3, 2, 2, 3, 1]),
                                                          ("increases", [1, 2, 3, 4, 5, 6])], figures / "two.png")]
    render(sections, tmp_path / "report", figures, "# losstopo report\n\nProfile `test`.")
    page = (tmp_path / "report" / "report.html").as_uri()

    def rendered() -> tuple[dict, str]:
        dom = _headless(browser, "--dump-dom", page).stdout
        body = re.search(r"<body([^>]*)>", dom)
        assert body is not None, dom[:500]
        return dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1))), dom

    attributes, dom = rendered()
    assert (attributes.get("data-images"), attributes.get("data-broken-images")) == ("2", "0")
    assert 'id="summary"' in dom and all(f'id="claim-{n}"' in dom for n in (1, 2, 3))
    assert '<p class="broken">' not in dom
    shot = tmp_path / "report.png"
    _headless(browser, f"--screenshot={shot}", "--window-size=1400,1800", page)
    assert shot.is_file() and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000

    (tmp_path / "figures" / "two.png").unlink()  # a broken figure is seen, and the page says so
    attributes, dom = rendered()
    assert (attributes.get("data-images"), attributes.get("data-broken-images")) == ("2", "1")
    assert '<p class="broken">1 of 2 figures did not load' in dom
