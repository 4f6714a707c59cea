"""Property: ``compose_config`` on arbitrary KEY=VALUE strings returns a valid config or raises a one-line
``ConfigError`` — never another exception (which the CLI would print as a traceback)."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from t2po_cli.config.compose import compose_config
from t2po_cli.config.validate import validate_config
from t2po_cli.errors import ConfigError

KEYS = st.one_of(
    st.sampled_from([
        "trainer.steps", "trainer.lr", "trainer.seed", "env.name", "env.url", "model", "t2po", "algo", "trainer",
        "run_name", "experiment_name", "trainer.train_sampling.top_p", "t2po.tds.eta", "+x", "+trainer.x",
        "~trainer.steps", "a.b.c", "", "_target_", "+_target_", "hydra.run.dir",
    ]),
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz._+~/${}[]", max_size=12),
)
VALUES = st.one_of(
    st.text(max_size=12),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["nan", "inf", "-1", "0", "1e400", "${x}", "${oc.env:HOME}", "[1,2]", "{a:1}", "null", "'",
                     "\"", "()", "../x", "/abs", "int(1)", "choice(1,2)", "os.system", "tiny", "off"]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(pairs=st.lists(st.tuples(KEYS, VALUES), max_size=3), raw=st.lists(st.text(max_size=20), max_size=1))
def test_compose_returns_valid_config_or_one_line_config_error(pairs: list[tuple[str, str]], raw: list[str],
                                                               ) -> None:
    overrides = [f"{k}={v}" for k, v in pairs] + raw
    try:
        composed = compose_config(overrides)
    except ConfigError as e:
        message = str(e)
        assert message and "\n" not in message, (overrides, message)
        return
    validate_config(composed.config)  # what compose returned is valid: re-validating must not raise
