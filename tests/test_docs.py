"""The guide (docs/, mkdocs.yml): its code runs, its quotes exist, its pictures draw, it builds.

Every ```python block of a page runs, in order, in one namespace per page; a block written as a
doctest (">>>") must also print what it shows. Code quoted with pymdownx.snippets
(--8<-- "file:section") must name an existing section, so a page cannot drift from the code.
"""
from __future__ import annotations

import doctest
import html
import importlib.util
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import maqueta
from maqueta import backend, plain
from maqueta.layers import conv

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^(?P<indent>[ ]*)```(?P<lang>\w*)\n(?P<body>.*?)^(?P=indent)```$", re.S | re.M)
SNIPPET = re.compile(r'--8<-- "(?P<path>[^":]+)(?::(?P<section>[\w-]+))?"')


def python_blocks(page):
    """The runnable Python blocks of a page (quotes of source files are not examples)."""
    blocks = []
    for m in FENCE.finditer(page.read_text()):
        if m["lang"] == "python" and "--8<--" not in m["body"]:
            blocks.append(inspect.cleandoc("\n" + m["body"]) + "\n")
    return blocks


def test_every_page_is_in_the_site():
    names = {p.name for p in PAGES}
    nav = (ROOT / "mkdocs.yml").read_text()
    assert names and all(name in nav for name in names)


@pytest.mark.parametrize("page", [p for p in PAGES if python_blocks(p)], ids=lambda p: p.name)
def test_code_blocks_run(page, monkeypatch):
    monkeypatch.chdir(ROOT)
    namespace = {"__name__": f"docs_{page.stem}"}
    parser, runner = doctest.DocTestParser(), doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    before = maqueta.get_num_threads()
    try:
        for k, block in enumerate(python_blocks(page)):
            name = f"{page.name}, python block {k + 1}"
            if block.lstrip().startswith(">>>"):
                test = parser.get_doctest(block, namespace, name, str(page), 0)
                result = runner.run(test, clear_globs=False)
                assert result.failed == 0, f"{name}: {result.failed} doctest example(s) failed (output above)"
            else:
                exec(compile(block, name, "exec"), namespace)
    finally:
        maqueta.set_num_threads(before)
        maqueta.set_backend("native")


def quoted_snippets():
    for page in PAGES:
        for m in SNIPPET.finditer(page.read_text()):
            yield page.name, m["path"], m["section"]


@pytest.mark.parametrize("page,path,section", sorted(set(quoted_snippets())), ids=str)
def test_quoted_code_exists(page, path, section):
    text = (ROOT / path).read_text()
    if section:
        assert f"--8<-- [start:{section}]" in text and f"--8<-- [end:{section}]" in text, \
            f"{page} quotes section {section!r} of {path}, which has no such markers"


def test_student_path_from_conv2d_to_the_plain_loop():
    """docs/index.md's path: layers/conv.py -> plain.py -> cpp/plain/conv2d.cpp, as it says."""
    index = (DOCS / "index.md").read_text()
    path = ["python/maqueta/layers/conv.py", "python/maqueta/plain.py", "cpp/plain/conv2d.cpp"]
    assert all(f"**`{p}`**" in index for p in path)
    assert "kernels().conv2d_forward(" in inspect.getsource(conv.Conv2D.forward)
    assert "kernels().conv2d_backward(" in inspect.getsource(conv.Conv2D.backward)
    with maqueta.use_backend("plain"):
        assert backend.kernels() is plain
    assert "_core.plain_conv2d_forward(" in inspect.getsource(plain.conv2d_forward)
    assert "_core.plain_conv2d_backward(" in inspect.getsource(plain.conv2d_backward)
    binding = (ROOT / "cpp/bind/conv2d.cpp").read_text()
    assert '"plain_conv2d_forward"' in binding and "plain::conv2d_forward<T>(" in binding
    kernel = (ROOT / "cpp/plain/conv2d.cpp").read_text()
    assert re.search(r"^void conv2d_forward\(T\* y,", kernel, re.M)
    assert re.search(r"^void conv2d_backward\(T\* dx,", kernel, re.M)


def test_plain_kernels_stay_plain():
    """cpp/plain: each quoted function at most ~60 lines, no SIMD, no template beyond T."""
    for source in sorted((ROOT / "cpp/plain").glob("*.cpp")):
        text = source.read_text()
        assert "vector_size" not in text and "intrin" not in text and "#pragma omp simd" not in text, source
        assert set(re.findall(r"template <([^>]*)>", text)) <= {"typename T"}, source
        sections = re.findall(r"--8<-- \[start:(\w+)\]\n(.*?)// --8<-- \[end:\1\]", text, re.S)
        assert sections, f"{source.name} marks no function for the guide"
        for name, body in sections:
            assert body.count("\n") <= 62, f"{source.name}: {name} has {body.count(chr(10))} lines"


def test_fast_kernels_name_their_plain_twin():
    for source in sorted((ROOT / "cpp/kernels").glob("*.[ch]*")):
        head = "".join(source.read_text().splitlines(keepends=True)[:6])
        twins = re.findall(r"cpp/plain/\w+\.cpp", head)
        assert twins, f"{source.name} does not name its plain twin in its opening comment"
        assert all((ROOT / t).is_file() for t in twins), twins


def test_figures_script_draws_every_picture(tmp_path):
    pytest.importorskip("matplotlib")
    subprocess.run([sys.executable, str(DOCS / "figures.py"), str(tmp_path)], check=True, timeout=120)
    drawn = sorted(p.name for p in tmp_path.glob("*.png"))
    assert drawn == sorted(p.name for p in (DOCS / "img").glob("*.png")) and drawn
    used = set(re.findall(r"\(img/([\w-]+\.png)\)", "".join(p.read_text() for p in PAGES)))
    assert used == set(drawn)


@pytest.mark.skipif(not (importlib.util.find_spec("mkdocs") and importlib.util.find_spec("pymdownx")),
                    reason="mkdocs and pymdown-extensions are not installed (pip install '.[docs]')")
def test_site_builds_without_warnings(tmp_path):
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    for page, line in (("convolution", "const int64_t n = no / O, o = no % O;"),
                       ("batchnorm", "const double mu = sum / M;")):
        text = html.unescape(re.sub(r"<[^>]+>", "", (tmp_path / f"{page}.html").read_text()))   # no highlighting
        assert line in text, page   # the quoted plain loop is on the page
        assert "--8<--" not in text
