"""Projections from LLM text to env actions (envs.md §0.4, errata 11-12).

Two pure functions, shared by every family:

* ``project_think_action`` — the strict ``<think>…</think><action>…</action>`` grammar used by ALFWorld and
  WebShop, with the released fallbacks for malformed output;
* ``project_search`` — the Search-R1 ``<search>``/``<answer>`` grammar, with the released case quirks.

Both follow the released code exactly, quirks included, so validity rates stay comparable with published
runs (errata, rule of thumb). The projected action is always sent to the env, valid or not (§0.4).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from t2po_cli.envs.base import Projection

_FLAGS = re.IGNORECASE | re.DOTALL
_STRICT = re.compile(r"^\s*<think>(.*?)</think>\s*<action>(.*?)</action>\s*$", _FLAGS)
# The released patterns, character for character: whitespace is tolerated around the tag name but never
# between "<" and "/". So "< action >x</ action >" is an action block (fallback 2), "< think >" counts as a
# second opening tag, and "< /think>" is plain text (it neither closes nor counts).
_ACTION_BLOCK = re.compile(r"<\s*action\s*>(.*?)</\s*action\s*>", _FLAGS)
_TAG_COUNTERS = tuple(
    re.compile(pattern, re.IGNORECASE)
    for pattern in (r"<\s*think\s*>", r"</\s*think\s*>", r"<\s*action\s*>", r"</\s*action\s*>")
)
_CJK = re.compile(r"[\u4e00-\u9fff]")
FALLBACK_CHARS = 30
"""Length of the raw-text tail sent as the action when no ``<action>`` block exists (§0.4 step 3)."""


def project_think_action(
    text: str, admissible: Sequence[str] | None, *, check_admissible: bool
) -> Projection:
    """Project one response under the strict think/action grammar (envs.md §0.4).

    Args:
        text: the decoded response (special tokens skipped; ``<think>`` tags kept).
        admissible: the env's admissible actions. ``None`` means the env gives no list: the action is then
            valid on format alone; an empty list makes every action invalid (errata 12).
        check_admissible: ALFWorld checks the action against ``admissible``; WebShop does not (§0.4).

    Returns:
        ``Projection(action, valid, format_valid)``. Malformed output still yields an action: the first
        action block (lower-cased; tags may carry whitespace around the name, ``< action >…</ action >``),
        else the last 30 characters of the raw text (not lower-cased).
    """
    strict = _STRICT.match(text)
    if strict and _tags_unique(text) and not _CJK.search(text):
        action = strict.group(2).strip().lower()
        valid = True
        if check_admissible and admissible is not None:
            valid = action in {a.lower() for a in admissible}
        return Projection(action=action, valid=valid, format_valid=True)
    block = _ACTION_BLOCK.search(text)
    if block:
        return Projection(action=block.group(1).strip().lower(), valid=False, format_valid=False)
    return Projection(action=text[-FALLBACK_CHARS:], valid=False, format_valid=False)


def _tags_unique(text: str) -> bool:
    """Exactly one opening and one closing tag of each kind (§0.4 step 1)."""
    return all(len(counter.findall(text)) == 1 for counter in _TAG_COUNTERS)


_SEARCH_BLOCK = re.compile(r"<search>(.*?)</search>", _FLAGS)
_ANSWER_BLOCK = re.compile(r"<answer>(.*?)</answer>", _FLAGS)
_SEARCH_OPEN = re.compile(r"<search>", re.IGNORECASE)
_ANSWER_OPEN = re.compile(r"<answer>", re.IGNORECASE)


def project_search(text: str) -> Projection:
    """Project one response under the Search-R1 tag grammar (envs.md §0.4, errata 11).

    The cut test looks for ``</search>`` / ``</answer>`` case-sensitively while extraction is
    case-insensitive, as in the release: ``<answer>x</answer><search>q</SEARCH>`` sends the answer, the
    all-lower-case variant sends the search. ``<think>`` is not required. Search has no separate format
    flag, so ``format_valid`` equals ``valid``.

    Args:
        text: the decoded response.

    Returns:
        ``Projection`` whose action is ``<search>q</search>``, ``<answer>a</answer>`` or ``""``.
    """
    trimmed = text.strip()
    # Case-sensitive cut (errata 11): only the lower-case closing tag triggers it.
    if "</search>" in trimmed:
        trimmed = trimmed.split("</search>", 1)[0] + "</search>"
    elif "</answer>" in trimmed:
        trimmed = trimmed.split("</answer>", 1)[0] + "</answer>"
    valid = True
    search = _SEARCH_BLOCK.search(trimmed)
    if search:
        action = f"<search>{search.group(1).strip()}</search>"
    else:
        answer = _ANSWER_BLOCK.search(trimmed)
        if answer:
            action = f"<answer>{answer.group(1).strip()}</answer>"
        else:
            action, valid = "", False
    # Mixed or repeated opening tags in the *original* text invalidate the turn (§0.4 step 3).
    n_search = len(_SEARCH_OPEN.findall(text))
    n_answer = len(_ANSWER_OPEN.findall(text))
    if (n_search and n_answer) or n_search > 1 or n_answer > 1:
        valid = False
    return Projection(action=action, valid=valid, format_valid=valid)
