"""The documentation stays true to the repository: the API reference is what `/api/v1/schema`
says now, every relative link leads to a file, and the README's package map names every module
of `notifications/` (and nothing that is not there)."""

import io
import json
import re
from pathlib import Path

from django.core.management import call_command

from notifications.management.commands.candor_api_docs import schema_document

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PACKAGE = ROOT / "notifications"
API_REFERENCE = DOCS / "api-reference.md"
REGENERATE = "python manage.py candor_api_docs > docs/api-reference.md"

LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]


def test_the_api_reference_is_the_schema_rendered_now():
    out = io.StringIO()
    call_command("candor_api_docs", stdout=out)
    committed = API_REFERENCE.read_text(encoding="utf-8")
    assert committed == out.getvalue(), f"docs/api-reference.md is out of date: run `{REGENERATE}`"


def test_the_api_reference_is_rendered_from_what_the_schema_route_serves(client):
    served = client.get("/api/v1/schema")
    assert served.status_code == 200
    assert json.loads(served.content) == schema_document()


def test_every_relative_link_in_the_docs_leads_to_a_file():
    missing = []
    for page in _markdown_files():
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        for target in LINK.findall(text):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue  # http(s), mailto: not files; an anchor alone stays on the page
            path = target.split("#", 1)[0]
            if not (page.parent / path).exists():
                missing.append(f"{page.relative_to(ROOT)}: {target}")
    assert not missing, "links to nothing:\n" + "\n".join(missing)


def test_every_docs_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = {target.split("#", 1)[0] for target in LINK.findall(readme)}
    pages = [f"docs/{page.name}" for page in sorted(DOCS.glob("*.md"))]
    unlinked = [page for page in pages if page not in linked]
    assert not unlinked, f"not in the README's 'Where to read on': {unlinked}"


def _package_map() -> list[str]:
    """The module column of the table under the README's "How it works": each backticked path
    (a `.py` file or a `folder/`), relative to `notifications/`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## How it works", 1)[1].split("\n## ", 1)[0]
    named = []
    for line in section.splitlines():
        cells = re.split(r"(?<!\\)\|", line)
        if len(cells) < 4 or set(cells[2].strip()) <= set("-"):
            continue
        named += [name for name in re.findall(r"`([^`]+)`", cells[2]) if name.endswith((".py", "/"))]
    return named


def test_the_package_map_names_only_what_exists():
    named = _package_map()
    assert named, "no package map found under the README's 'How it works'"
    gone = [name for name in named if not (PACKAGE / name).exists()]
    assert not gone, f"the README's package map names modules that are not in notifications/: {gone}"


def test_the_package_map_names_every_module():
    named = _package_map()
    folders = [name for name in named if name.endswith("/")]
    unnamed = []
    for module in sorted(PACKAGE.rglob("*.py")):
        relative = module.relative_to(PACKAGE).as_posix()
        if module.name == "__init__.py" or "__pycache__" in relative:
            continue
        if relative in named or any(relative.startswith(folder) for folder in folders):
            continue
        unnamed.append(relative)
    assert not unnamed, f"modules of notifications/ missing from the README's package map: {unnamed}"
