"""The counted dimensions of the decisions: the one declaration every store's counts follow.

The SQLite writer's fold and the background folder (store/sqlite/counts.py) build their SQL from these
names; the facet and total readers pick their statements by them; `recount` rebuilds through the same
fold. The triggers of the applied migrations (013-020) name them in plain SQL, and the PostgreSQL store
facets the table by FACET_FIELDS: tests/store/test_dimensions.py checks all of these against this module, and
docs/reading.md lists the dimensions from `markdown()` (the same test checks the list is current). A
change here needs a new migration that makes the triggers again.
"""

from __future__ import annotations

# The columns `GET /decisions/facets` counts by, in response order.
FACET_FIELDS = ("decision", "severity", "repository", "agent_id", "policy_pack", "action_type")
# Fields counted per value, per UTC day and for all time, per tenant and outcome; the decision facet and
# the total are sums over the TOTAL_FIELD rows (every decision has one severity row).
COUNTED_FIELDS = ("severity", "repository", "agent_id", "policy_pack", "action_type", "workspace_id", "rule_id")
TOTAL_FIELD = "severity"
# Facet fields are also counted per value of one of these, for all time (pair rows, keyed
# `field|given=value`): filters no index serves, whose broad values would otherwise read every match.
PAIRED = ("policy_pack", "severity", "action_type", "workspace_id")
PAIR_FIELDS = tuple(name for name in FACET_FIELDS if name != "decision")
# Fields whose all-time rows are also summed over the outcomes (outcome ANY_OUTCOME).
ROLLED = tuple(name for name in FACET_FIELDS if name != "decision")
# Keys that are no real value: any outcome, any tenant (real tenants are keyed '' for NULL or '=...').
ANY_OUTCOME = "*"
ANY_TENANT = "*"
# Bucket lengths as prefixes of the normalised timestamp: all time, a UTC day.
ALL_TIME, DAY = 0, 10
# Filters the counts are keyed by: any values of these, plus (totals only) any values of one counted field.
KEYED = frozenset({"tenant_id", "decision"})


def pairs() -> tuple[tuple[str, str], ...]:
    """Every (field, given) the pair rows count: each pair field among each paired field's values."""
    return tuple((name, given) for given in PAIRED for name in PAIR_FIELDS if name != given)


def markdown() -> str:
    """The dimensions as docs/reading.md lists them."""

    def code(names: tuple[str, ...]) -> str:
        return ", ".join(f"`{name}`" for name in names)

    return "\n".join(
        [
            "| counted | per | fields |",
            "|---|---|---|",
            f"| per value | UTC day and all time; tenant (and any tenant `{ANY_TENANT}` for all time); outcome"
            f" | {code(COUNTED_FIELDS)} |",
            f"| summed over the outcomes (`{ANY_OUTCOME}`) | all time; tenant and any tenant | {code(ROLLED)} |",
            f"| pair rows `field\\|given=value` | all time; tenant and any tenant; outcome | {code(PAIR_FIELDS)}"
            f" per value of {code(PAIRED)} |",
            f"| outcome facet and total | sums of the `{TOTAL_FIELD}` rows | `decision` |",
        ]
    )
