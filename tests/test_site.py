"""The course's website (tools/build_site.py): it builds offline with warnings as errors, its
links resolve, and a real browser (Debian's Chromium, driven by Playwright) shows typeset maths,
loaded figures and working navigation, fetching nothing from outside the site.

The site is built once per test session (about 10 s on a quiet 2-core machine). The browser
tests write their screenshots to docs/_build/screenshots/, to look at. Without a Chromium they
skip, saying how to install one, except under CI (CI=true), where they fail: .ci/run installs it.
"""

import functools
import html
import html.parser
import http.server
import importlib.util
import os
import re
import shutil
import threading
import urllib.parse
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "docs" / "_build" / "screenshots"
BROWSER_PAGES = ["index.html", "notebooks/01_attention.html", "notebooks/06_training.html"]


def _tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SITE = _tool("build_site")
NOTEBOOKS = SITE.notebook_names()


class _Page(html.parser.HTMLParser):
    """The links (href, src) and element ids of one HTML page."""

    def __init__(self):
        super().__init__()
        self.links, self.ids = [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for key in ("href", "src"):
            if attrs.get(key):
                self.links.append((tag, attrs[key]))


@functools.cache
def parsed(path):
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def pages(site):
    """The site's HTML pages (not the theme's template fragments in _static)."""
    return sorted(page for page in site.rglob("*.html") if "_static" not in page.relative_to(site).parts)


@pytest.fixture(scope="session")
def site(tmp_path_factory):
    """The HTML folder of a fresh build (Sphinx -W: a warning fails it)."""
    out = tmp_path_factory.mktemp("site") / "html"
    status = SITE.build(out_dir=out, source_dir=out.parent / "source")
    assert status == 0, f"the site's build failed (Sphinx exit status {status}, warnings are errors): see above"
    return out


def page_of(notebook_name):
    return f"notebooks/{Path(notebook_name).stem}.html"


def visible_text(path):
    """The page's HTML without its scripts (their search index and config are not what a reader sees)."""
    return re.sub(r"<script.*?</script>", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_site_has_a_page_for_the_readme_every_notebook_and_the_benchmarks(site):
    expected = ["index.html", "benchmarks/RESULTS.html", *map(page_of, NOTEBOOKS)]
    missing = [page for page in expected if not (site / page).is_file()]
    assert not missing, f"pages missing from the site: {missing}"
    assert "Quick start" in (site / "index.html").read_text(encoding="utf-8"), "the front page is not the README"


def test_internal_links_and_anchors_resolve(site):
    broken = []
    assert len(pages(site)) > len(NOTEBOOKS)
    for page in pages(site):
        for tag, link in parsed(page).links:
            url = urllib.parse.urlsplit(link)
            if url.scheme or url.netloc or link.startswith("mailto:"):
                continue
            target = (page.parent / urllib.parse.unquote(url.path)).resolve() if url.path else page
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{page.relative_to(site)}: <{tag}> {link} (no such file)")
            elif url.fragment and target.suffix == ".html" and url.fragment not in parsed(target).ids:
                broken.append(f"{page.relative_to(site)}: <{tag}> {link} (no such anchor)")
    assert not broken, f"{len(broken)} broken internal links:\n" + "\n".join(broken[:20])


def test_pages_load_no_script_style_or_image_from_a_network(site):
    remote = [
        f"{page.relative_to(site)}: <{tag}> {link}"
        for page in pages(site)
        for tag, link in parsed(page).links
        if tag in ("script", "img") or (tag == "link" and not link.startswith("#"))
        if urllib.parse.urlsplit(link).scheme in ("http", "https") or link.startswith("//")
    ]
    assert not remote, "pages that need a network:\n" + "\n".join(remote[:20])
    assert (site / "_static" / "mathjax" / "tex-chtml.js").is_file(), "MathJax is not served by the site"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_page_has_its_colab_link_at_the_release_tag(site, name):
    url = SITE.colab_url(f"notebooks/{name}")
    assert "/blob/v" in url
    assert f'href="{url}"' in (site / page_of(name)).read_text(encoding="utf-8")


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_page_leaves_out_the_colab_set_up_cell(site, name):
    # notebook 11's second set-up cell (the peers' installs) starts with the same marker
    assert SITE.sync_colab_cells.PEERS_MARKER.startswith(SITE.sync_colab_cells.INSTALL_MARKER)
    assert SITE.sync_colab_cells.INSTALL_MARKER not in visible_text(site / page_of(name))


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_page_has_every_figure_of_the_notebook(site, name):
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    figures = sum(
        "image/png" in output.get("data", {}) for cell in notebook.cells for output in cell.get("outputs", [])
    )
    images = [link for tag, link in parsed(site / page_of(name)).links if tag == "img" and "_images/" in link]
    assert figures > 0
    assert len(images) == figures, f"{name} stores {figures} figures, its page shows {len(images)}"


def test_progress_bars_are_not_on_the_pages(site):
    notebook = nbformat.read(ROOT / "notebooks" / "06_training.ipynb", as_version=4)
    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    assert any(SITE.is_progress_bar(output) for output in outputs), "notebook 6 has no progress bar to leave out"
    with_bars = [page for page in map(page_of, NOTEBOOKS) if re.search(r"\d+it/s|it/s\]", visible_text(site / page))]
    assert not with_bars, f"progress bars shown on {with_bars}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_each_exercise_shows_the_stub_and_folds_its_worked_solution_away(site, name):
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    checks = [
        m.group(1) for cell in notebook.cells if (m := SITE._CHECK.match(cell.source)) and cell.cell_type == "code"
    ]
    text = (site / page_of(name)).read_text(encoding="utf-8")
    folded = re.findall(r'<details class="[^"]*hide above-input">(.*?)</details>', text, flags=re.DOTALL)
    assert len(folded) == len(checks), f"{name}: {len(checks)} exercises, {len(folded)} folded solutions"
    for function, block in zip(checks, folded):
        code = html.unescape(re.sub(r"<[^>]+>", "", block))
        assert f"def {function}(" in code, f"{name}: the folded block after check_{function} is not its solution"
        assert "NotImplementedError" not in code, f"{name}: the folded block of {function} is the stub"
    stubs = len(re.findall(r"NotImplementedError", visible_text(site / page_of(name))))
    assert stubs >= len(checks), f"{name}: the exercises' stubs are not on the page"


# ---------------------------------------------------------------- in a real browser


def chromium():
    """Debian's Chromium (apt-get install chromium), or $CHROMIUM; None if there is none."""
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def browser():
    executable = chromium()
    if executable is None:
        message = "no Chromium to drive: apt-get install chromium (or set CHROMIUM to a Chromium binary)"
        if os.environ.get("CI"):
            pytest.fail(message + "; .ci/run should have installed it")
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(site):
    """The site served on 127.0.0.1 (a free port), as a reader's browser would load it."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    thread.join()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def open_page(browser, server, path):
    """A browser page at server/path, with every request that leaves the site blocked and recorded."""
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.outside = []

    def route(request_route):
        if request_route.request.url.startswith(server):
            request_route.continue_()
        else:
            page.outside.append(request_route.request.url)
            request_route.abort()

    page.route("**/*", route)
    page.goto(f"{server}/{path}", wait_until="load")
    return page


def typeset_maths(page):
    """Wait for MathJax to finish; the number of typeset formulas and of MathJax error boxes."""
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30_000)
    page.evaluate("() => MathJax.startup.promise")
    return page.evaluate(
        "() => [document.querySelectorAll('mjx-container').length, document.querySelectorAll('mjx-merror').length]"
    )


@pytest.mark.parametrize("path", BROWSER_PAGES)
def test_page_in_a_browser_typesets_maths_loads_figures_and_stays_offline(browser, server, path):
    page = open_page(browser, server, path)
    try:
        formulas, errors = typeset_maths(page)
        assert formulas > 0, f"{path}: MathJax typeset no formula"
        assert errors == 0, f"{path}: MathJax could not typeset {errors} formulas"
        images = page.evaluate("() => Array.from(document.images).map(i => [i.currentSrc, i.complete, i.naturalWidth])")
        figures = [src for src, _, _ in images if "/_images/" in src]
        broken = [src for src, complete, width in images if not (complete and width > 0)]
        if path.startswith("notebooks/"):
            assert figures, f"{path}: no figure on the page"
        assert not broken, f"{path}: images that did not load: {broken}"
        assert not page.outside, f"{path} asked for things outside the site: {page.outside[:5]}"
        # the screenshot shows the first figure (or, on a page without one, the first formula) in context
        first = page.locator("img[src*='_images/']" if figures else "mjx-container").first
        first.evaluate("element => element.scrollIntoView({block: 'center'})")
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / (path.replace("/", "_").removesuffix(".html") + ".png")
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000, f"{shot} is nearly empty"
    finally:
        page.close()


def test_navigation_in_a_browser_goes_from_the_front_page_to_a_notebook_and_on(browser, server):
    page = open_page(browser, server, "index.html")
    try:
        page.click("nav.bd-docs-nav a[href='notebooks/01_attention.html']")
        page.wait_for_url("**/notebooks/01_attention.html")
        assert page.inner_text("h1").startswith("1. Attention")
        page.click("a.right-next")
        page.wait_for_url("**/notebooks/02_cross_attention.html")
        assert page.inner_text("h1").startswith("2. Cross-attention")
        solution = page.locator("details.hide.above-input").first
        assert not solution.evaluate("d => d.open"), "a worked solution is unfolded"
        solution.locator("summary").click()
        assert solution.evaluate("d => d.open"), "a worked solution does not unfold"
        assert not page.outside, f"asked for things outside the site: {page.outside[:5]}"
    finally:
        page.close()
