"""Early-warning diagnostics: pure functions over one step's rollout and update (``signals``); torch only."""
