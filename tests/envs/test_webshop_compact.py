"""WebShop's compact prompt style (env.prompt_style=compact): short, and nothing the page shows is lost."""

from __future__ import annotations

from t2po_cli.envs.base import HistoryEntry, Task
from t2po_cli.envs.registry import expert_dialogues
from t2po_cli.envs.webshop import FAMILY
from t2po_cli.envs.webshop.engine import SEP
from t2po_cli.envs.webshop.prompt import (
    COMPACT_PART_CHARS,
    build_compact_prompt,
    compact_actions,
    compact_page,
)

TASK = Task(env="webshop", split="val", index=0, seed=0, instruction="find me red mugs", payload={})


def test_compact_page_drops_the_goal_and_lowercases_the_parts() -> None:
    raw = SEP.join(["WebShop", "Instruction:", "find me red mugs", "Back to Search", "B0ABCDEFGH", "Red Mug, Large",
                    "$9.99"])
    assert compact_page(raw, "find me red mugs") == "back to search | b0abcdefgh | red mug, large | $9.99"
    # a page without the goal text (the done page) keeps every part
    assert compact_page(SEP.join(["Thank you", "Score 1"]), "find me red mugs") == "thank you | score 1"


def test_compact_page_cuts_long_parts_at_a_word() -> None:
    long = " ".join(["word"] * 100)  # 499 characters
    cut = compact_page(SEP.join(["find me red mugs", long]), "find me red mugs")
    assert cut.endswith(" …") and len(cut) <= COMPACT_PART_CHARS + 2 and "wor …" not in cut


def test_compact_actions_name_the_forms_not_the_clickables() -> None:
    assert compact_actions(["search[<your query>]", "click[search]"]) == \
        "search[<your query>], click[<text on the page>]"
    assert compact_actions(["click[back to search]", "click[b0abcdefgh]"]) == "click[<text on the page>]"
    assert compact_actions([]) == "none"


def test_compact_prompt_keeps_the_last_actions_only() -> None:
    history = [HistoryEntry("p", a) for a in ("search[red mug]", "click[b0abcdefgh]", "click[red]")]
    info = {"admissible": ["click[buy now]"]}
    prompt = build_compact_prompt(TASK, history, "find me red mugs [SEP] Buy Now", info, turn=3, history_length=2)
    assert prompt.splitlines()[:4] == [
        "Task: find me red mugs.",
        "Past actions: … > click[b0abcdefgh] > click[red]",
        "Page: buy now",
        "Actions: click[<text on the page>]",
    ]
    first = build_compact_prompt(TASK, [], "Search", {"admissible": ["search[<your query>]"]}, turn=0,
                                 history_length=2)
    assert "Past actions: none" in first


def test_compact_prompts_are_several_times_shorter_and_show_every_clickable() -> None:
    assert FAMILY.prompt_styles == ("full", "compact")
    full = [p for t in expert_dialogues("webshop", 8, 0, history_length=2, demonstrator=True) for p, _ in t]
    short = [p for t in expert_dialogues("webshop", 8, 0, history_length=4, demonstrator=True,
                                         prompt_style="compact") for p, _ in t]
    assert len(full) == len(short)  # same episodes, same turns
    assert sum(map(len, full)) > 3 * sum(map(len, short))
    for turns in expert_dialogues("webshop", 8, 0, history_length=4, demonstrator=True, prompt_style="compact"):
        for prompt, response in turns:
            action = response.split("<action>")[1].removesuffix("</action>")
            if action.startswith("click["):  # every click the demonstrator makes is written on its page
                assert action[6:-1] in prompt.split("Page: ")[1].split("\n")[0], (action, prompt)
