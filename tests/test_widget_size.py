"""The widget's static promises, checked on its source: small, no markup from strings, nothing
stored on the shopper's device, one global. (Its behaviour is tested in tests/browser.)"""

import base64
import gzip
import hashlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
WIDGET = ROOT / "static" / "candor" / "widget.js"
MAX_GZIPPED = 6 * 1024


def test_widget_is_at_most_6_kb_gzipped():
    size = len(gzip.compress(WIDGET.read_bytes(), compresslevel=9))
    assert size <= MAX_GZIPPED, f"widget.js is {size} bytes gzipped (limit {MAX_GZIPPED})"


@pytest.mark.parametrize(
    "forbidden",
    [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
        "localStorage",
        "sessionStorage",
        "document.cookie",
        "indexedDB",
        '.setAttribute("style"',
        ".style.",
    ],
)
def test_widget_uses_no_markup_strings_no_inline_style_and_no_storage(forbidden):
    assert forbidden not in WIDGET.read_text(encoding="utf-8")


def test_widget_defines_one_global():
    source = WIDGET.read_text(encoding="utf-8")
    assert re.findall(r"window\.(\w+)\s*=", source) == ["Candor"]
    # One function expression run at once: nothing else leaks into the page's scope.
    assert source.lstrip().startswith("/*!") and source.rstrip().endswith("})();")
    assert "(function () {" in source


def test_the_documented_sri_hash_is_the_widget_s():
    """The integration guide (docs/integrating.md, "Subresource Integrity") pins the hash."""
    digest = "sha384-" + base64.b64encode(hashlib.sha384(WIDGET.read_bytes()).digest()).decode()
    guide = (ROOT / "docs" / "integrating.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"sha384-[A-Za-z0-9+/=]{64}", guide))
    assert documented, "docs/integrating.md documents no SRI hash for widget.js"
    assert documented == {digest}, f"widget.js changed: its SRI hash is now {digest}"
