"""Alerts, the availability test and the workbook (infra/modules/alerts.bicep) watch what the app
really does: each query's log lines are rendered from the app's own format strings and read back
the way the query reads them, so a renamed log line, cursor, function or exception fails here
instead of silencing an alert in Azure."""

from __future__ import annotations

import ast
import json
import re
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from shared.health import CURSOR_SCHEDULES, STALL_PERIODS, HealthReport
from shared.jobs import POISON_QUEUE
from shared.ncrontab import parse_schedule
from tests.infra.infra_model import (
    INFRA,
    MAIN,
    MODULES,
    REPO,
    body,
    module_path,
    parse,
    property_path,
    read_parameters,
    resources_of_type,
)

AZD = INFRA / "main.parameters.json"
ALERTS = MODULES / "alerts.bicep"
WORKBOOK = MODULES / "alerts-workbook.json"
OPERATE = REPO / "docs" / "operate.md"
SHARED = REPO / "shared"

WEBTESTS = "Microsoft.Insights/webtests"
METRIC_ALERTS = "Microsoft.Insights/metricAlerts"
QUERY_RULES = "Microsoft.Insights/scheduledQueryRules"
WORKBOOKS = "Microsoft.Insights/workbooks"

# The signals issue 18 asks alerts for, by the name each log alert carries in alerts.bicep.
LOG_SIGNALS = {"poisoned-jobs", "failed-invocations", "webhook-401", "token-failures"}
# Exception types the token-failure alert looks for, and where the app gets each one.
TOKEN_ERRORS = {
    "RefreshTokenRejected": "shared.partner_center",
    "PartnerCenterAuthError": "shared.partner_center",
    "AuthenticationFailed": "shared.dataverse",
    "ClientAuthenticationError": "azure.core.exceptions",
    "CredentialUnavailableError": "azure.identity",
}
# What the Functions host (not this app) logs when it poisons a message (WebJobs QueueProcessor).
HOST_POISON_LINE = "Message has reached MaxDequeueCount of 5. Moving message to queue '{queue}'."


# --- reading the Bicep and the source --------------------------------------------------------


def _alerts() -> dict[str, Any]:
    return parse(module_path("alerts"))


def _var(name: str) -> Any:
    return _alerts()["variables"][name]["value"]


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


@cache
def _constants(path: Path) -> tuple[str, ...]:
    """Every string constant of a Python file (f-string parts included), docstrings left out:
    only what the code can write."""
    tree = ast.parse(_text(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return tuple(
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    )


def _app_constants() -> set[str]:
    files = [*SHARED.rglob("*.py"), REPO / "function_app.py"]
    return {c for f in files for c in _constants(f)}


def _format_string(relative: str, *fragments: str) -> str:
    """The one string constant of shared/<relative> holding every fragment: a log format."""
    found = [c for c in _constants(SHARED / relative) if all(f in c for f in fragments)]
    assert len(found) == 1, f"shared/{relative}: {len(found)} strings hold {fragments}: {found}"
    return found[0]


def _log_alert(name: str) -> dict[str, Any]:
    [alert] = [a for a in _var("logAlerts") if a["name"] == name]
    return alert


def _query(alert_name: str) -> str:
    return str(_var(_log_alert(alert_name)["query"]))


def _cursor_queries() -> dict[str, str]:
    template = str(_var("cursorAgeQueryTemplate"))
    return {
        c["name"]: template.replace("__PREFIX__", c["prefix"]).replace("__WORD__", c["word"])
        for c in _var("cursorAlerts")
    }


def _workbook() -> dict[str, Any]:
    data = json.loads(_text(WORKBOOK))
    assert isinstance(data, dict)
    return data


def _workbook_queries() -> dict[str, str]:
    return {
        item["name"]: item["content"]["query"] for item in _workbook()["items"] if item["type"] == 3
    }


def _all_queries() -> dict[str, str]:
    queries = {name: _query(name) for name in LOG_SIGNALS}
    queries.update({f"cursor {n}": q for n, q in _cursor_queries().items()})
    queries.update({f"workbook {n}": q for n, q in _workbook_queries().items()})
    return queries


# --- a little KQL: string literals, `parse ... with`, has / startswith ---------------------------

_LITERAL = re.compile(r'(@?)"((?:[^"\\]|\\.)*)"')
_PARSE_TOKEN = re.compile(r'"((?:[^"\\]|\\.)*)"|(\*)|(\w+)(?::(\w+))?')


def _literals(query: str) -> list[str]:
    return [m.group(2) for m in _LITERAL.finditer(query) if not m.group(1)]


def _regexes(query: str) -> list[str]:
    return [m.group(2) for m in _LITERAL.finditer(query) if m.group(1)]


def _parse_patterns(query: str) -> list[str]:
    return re.findall(r"\|\s*parse message with (.+)$", query, re.M)


def kql_parse(pattern: str, text: str) -> dict[str, str] | None:
    """What `parse text with <pattern>` extracts (simple mode: literals, columns, *), or None."""
    regex, columns = "^", 0
    for literal, star, column, kind in _PARSE_TOKEN.findall(pattern):
        if star:
            regex += ".*?"
        elif column:
            number = kind in ("long", "int", "real")
            regex += rf"(?P<{column}>-?\d+(?:\.\d+)?)" if number else rf"(?P<{column}>.*?)"
            columns += 1
        else:
            regex += re.escape(literal)
    match = re.match(regex + "$", text, re.S)
    assert columns, f"no column in {pattern!r}"
    return match.groupdict() if match else None


def _has(text: str, term: str) -> bool:
    """KQL `contains` (case-insensitive substring)."""
    return term.lower() in text.lower()


# --- the log lines the app writes, rendered from its own format strings ------------------------


def _sync_done_line(outcome: str = "synced", ms: int = 1234) -> str:
    fmt = _format_string("triggers/worker.py", "sync_job: ", " -> ", "remote calls")
    return fmt % ("referral", "6f1f8a5e-0000-4000-8000-000000000001", "webhook:x", outcome, ms, 7)


def _sync_failed_line(error: str) -> str:
    fmt = _format_string("triggers/worker.py", "sync_job: ", " failed on attempt ")
    return fmt % ("opportunity", "6f1f8a5e-0000-4000-8000-000000000002", "poll", 3, error)


def _malformed_line() -> str:
    fmt = _format_string("triggers/worker.py", "is not a job")
    return fmt % ("message-1", "not JSON")


def _drift_failed_line(error: str) -> str:
    return _format_string("drift.py", "drift scan failed: ") % error


def _answer_line(function: str, status: int, outcome: str) -> str:
    fmt = _format_string("triggers/webhook.py", " answered ")
    assert f'log_answer(logger, "{function}"' in _text(SHARED / "triggers" / _file_of(function))
    return fmt % (function, status, outcome)


def _file_of(function: str) -> str:
    return {"webhook": "webhook.py", "dataverse_webhook": "dataverse_webhook.py"}[function]


def _cursor_line(name: str) -> str:
    relative = {
        "poll_dataverse": "triggers/poll.py",
        "reconcile_partner_center": "triggers/reconcile.py",
    }
    fmt = _format_string(relative[name], f"{name}: ", " enqueued")
    return fmt % tuple(range(fmt.count("%d")))


# --- the availability test ---------------------------------------------------------------------


def test_alerts_module_is_wired_from_main() -> None:
    assert module_path("alerts") == ALERTS.resolve()
    passed = body(parse(MAIN)["modules"]["alerts"])["params"]
    assert property_path(passed["applicationInsightsName"]) == [
        "monitoring",
        "outputs",
        "applicationInsightsName",
    ]
    assert property_path(passed["functionAppName"]) == ["functionApp", "outputs", "name"]
    # The same host as main.bicep's HEALTH_URL output.
    assert property_path(passed["functionAppHostName"]) == [
        "functionApp",
        "outputs",
        "defaultHostName",
    ]
    health_url = parse(MAIN)["outputs"]["HEALTH_URL"]["value"]
    assert health_url == "https://${functionApp.outputs.defaultHostName}" + _var("healthPath")


def test_availability_test_is_a_standard_test_of_api_health(
    declared_functions: dict[str, list[dict[str, Any]]],
) -> None:
    [(_, test)] = resources_of_type(_alerts(), WEBTESTS)
    assert test["config"]["condition"] == "enableAvailabilityTest"
    config = body(test)
    assert config["kind"] == "standard"
    properties = config["properties"]
    assert properties["Kind"] == "standard"
    request = properties["Request"]
    assert request["HttpVerb"] == "GET"
    assert request["RequestUrl"] == "https://${functionAppHostName}${healthPath}"
    assert _var("healthPath") == "/api/health"
    # /api/health is the `health` function's route (host.json routePrefix `api`).
    function = _var("healthFunctionName")
    [trigger] = [b for b in declared_functions[function] if b["type"] == "httpTrigger"]
    assert trigger["route"] == "health"
    assert json.loads(_text(REPO / "host.json"))["extensions"]["http"]["routePrefix"] == "api"
    # 200 is what health answers when healthy; degraded (503) fails the test.
    assert (
        properties["ValidationRules"]["ExpectedHttpStatusCode"]
        == HealthReport(status="healthy").http_status
    )
    assert HealthReport(status="degraded").http_status != 200
    # The component link, without which the portal does not list the test.
    tags = config["tags"]["function"]["parameters"]["arg_2"]
    assert tags == {"'hidden-link:${applicationInsights.id}'": "Resource"}
    assert len(properties["Locations"]["config"]) == 1  # a loop over the locations
    assert len(_var("availabilityTestLocations")) >= 5  # Microsoft recommends five


def test_availability_test_has_its_own_random_key_on_the_health_function(
    declared_functions: dict[str, list[dict[str, Any]]],
) -> None:
    function = _var("healthFunctionName")
    [trigger] = [b for b in declared_functions[function] if b["type"] == "httpTrigger"]
    assert trigger["authLevel"].lower() == "function", "health is anonymous now: drop the key"
    tree = _alerts()
    # A @secure() parameter whose default is newGuid(): random per deployment, in no file.
    key_parameter = tree["parameters"]["availabilityTestKey"]
    assert {"type": "secure"} in key_parameter["decorators"]
    assert key_parameter["default"] == {"function": {"type": "new_guid"}}
    assert _var("healthKeyValue")["function"]["parameters"]["original_string"] == (
        "availabilityTestKey"
    )
    # Written as a function key of `health` (not a host key: it opens no other function) ...
    [(symbol, key)] = resources_of_type(tree, "Microsoft.Web/sites/functions/keys")
    assert key["config"]["condition"] == "enableAvailabilityTest"
    assert body(key)["value"] == "healthKeyValue"
    health = tree["resources"][body(key)["parent"]]
    assert health["existing"] is True and body(health)["name"] == "healthFunctionName"
    site = tree["resources"][body(health)["parent"]]
    assert site["type"] == "Microsoft.Web/sites" and site["existing"] is True
    assert body(site)["name"] == "functionAppName"
    assert not list(resources_of_type(tree, "Microsoft.Web/sites/host/functionKeys"))
    # ... and sent by the test in the header the Functions host reads keys from.
    [(_, test)] = resources_of_type(tree, WEBTESTS)
    [header] = body(test)["properties"]["Request"]["Headers"]
    assert header == {"key": "x-functions-key", "value": "healthKeyValue"}
    assert body(test)["dependsOn"] == [symbol]
    assert "?code=" not in body(test)["properties"]["Request"]["RequestUrl"]


def test_availability_alert_fires_on_failed_locations_of_that_test() -> None:
    [(_, alert)] = resources_of_type(_alerts(), METRIC_ALERTS)
    assert alert["config"]["condition"] == "enableAvailabilityTest"
    properties = body(alert)["properties"]
    criteria = properties["criteria"]
    assert criteria["'odata.type'"] == "Microsoft.Azure.Monitor.WebtestLocationAvailabilityCriteria"
    assert property_path(criteria["webTestId"]) == ["availabilityTest", "id"]
    assert property_path(criteria["componentId"]) == ["applicationInsights", "id"]
    assert criteria["failedLocationCount"] == "availabilityFailedLocations"
    assert [property_path(s) for s in properties["scopes"]] == [
        ["availabilityTest", "id"],
        ["applicationInsights", "id"],
    ]
    failed = _alerts()["parameters"]["availabilityFailedLocations"]["default"]
    assert failed <= len(_var("availabilityTestLocations"))


# --- one alert per signal, each wired to the action group --------------------------------------


def test_there_is_one_alert_per_required_signal() -> None:
    assert {a["name"] for a in _var("logAlerts")} == LOG_SIGNALS
    assert {c["name"] for c in _var("cursorAlerts")} == set(CURSOR_SCHEDULES)
    rules = dict(resources_of_type(_alerts(), QUERY_RULES))
    assert rules["logAlertRules"]["config"]["loop_type"]["detail"]["array_name"] == "logAlerts"
    assert rules["cursorAgeAlerts"]["config"]["loop_type"]["detail"]["array_name"] == "cursorAlerts"
    assert len(list(resources_of_type(_alerts(), METRIC_ALERTS))) == 1  # the availability alert


def test_every_alert_notifies_the_action_group_parameter() -> None:
    tree = _alerts()
    alerts = [*resources_of_type(tree, QUERY_RULES), *resources_of_type(tree, METRIC_ALERTS)]
    assert len(alerts) == 3
    for symbol, alert in alerts:
        config = body(alert)
        actions = config["properties"]["actions"]
        if alert["type"] == QUERY_RULES:
            assert actions == {"actionGroups": "actionGroupIds"}, symbol
            assert config["kind"] == "LogAlert"
            assert [property_path(s) for s in config["properties"]["scopes"]] == [
                ["applicationInsights", "id"]
            ]
        else:
            assert actions["loop_type"]["detail"]["array_name"] == "actionGroupIds", symbol
            assert actions["config"] == {"actionGroupId": "id"}
        # The created group (named by resourceId) must exist before the alert refers to it.
        assert config["dependsOn"] == ["actionGroup"], symbol
    # actionGroupIds: the given group, else the one created for alertEmailAddress, else none.
    text = _text(ALERTS)
    chosen = "var actionGroupIds = empty(actionGroupId) ? createdActionGroupIds : [actionGroupId]"
    assert chosen in text.splitlines()
    assert "var createActionGroup = empty(actionGroupId) && !empty(alertEmailAddress)" in text
    [(_, group)] = resources_of_type(tree, "Microsoft.Insights/actionGroups")
    assert group["config"]["condition"] == "createActionGroup"
    receivers = body(group)["properties"]["emailReceivers"]
    assert [r["emailAddress"] for r in receivers] == ["alertEmailAddress"]
    assert len(body(group)["properties"]["groupShortName"]) <= 12
    passed = body(parse(MAIN)["modules"]["alerts"])["params"]
    assert passed["actionGroupId"] == "actionGroupId"
    assert passed["alertEmailAddress"] == "alertEmailAddress"


def test_alert_thresholds_are_parameters_with_defaults() -> None:
    parameters = _alerts()["parameters"]
    thresholds = [a["threshold"] for a in _var("logAlerts")]
    thresholds += [c["maxAgeMinutes"] for c in _var("cursorAlerts")]
    thresholds.append("availabilityFailedLocations")
    for name in thresholds:
        assert name in parameters, f"threshold {name} is not a parameter"
        assert isinstance(parameters[name].get("default"), int), f"{name} needs a default"
    # main.bicep declares each with the same default and passes it through.
    main = parse(MAIN)["parameters"]
    passed = body(parse(MAIN)["modules"]["alerts"])["params"]
    for name in thresholds:
        assert main[name]["default"] == parameters[name]["default"], name
        assert passed[name] == name


def test_every_alert_parameter_of_main_is_mapped_for_azd_and_set_only_where_declared() -> None:
    passed = body(parse(MAIN)["modules"]["alerts"])["params"]
    main = parse(MAIN)["parameters"]
    new = {name for name, value in passed.items() if value == name and name in main}
    assert new >= {"enableAvailabilityTest", "actionGroupId", "alertEmailAddress"}
    azd = read_parameters(AZD)
    for name in new - {"location"}:
        assert name in azd, f"main.parameters.json does not map {name}"
        assert re.fullmatch(r"\$\{[A-Z][A-Z0-9_]*(=[^}]*)?\}", azd[name]["value"]), name
        default = re.fullmatch(r"\$\{[A-Z0-9_]+=(.*)\}", azd[name]["value"])
        if default and "default" in main[name]:
            assert default.group(1) == str(main[name]["default"]).lower(), name


def test_cursor_alerts_never_fire_before_health_calls_the_cursor_stalled() -> None:
    # Health degrades after STALL_PERIODS timer periods + 60 s (shared/health.py); an alert
    # that fired earlier would page for a timer that is merely between runs.
    main = parse(MAIN)["parameters"]
    schedules = {
        "poll_dataverse": main["dataversePollSchedule"]["default"],
        "reconcile_partner_center": main["partnerCenterReconcileSchedule"]["default"],
    }
    alerts = _alerts()["parameters"]
    moment = datetime(2026, 12, 1, 10, 0, 30, tzinfo=UTC)
    for cursor in _var("cursorAlerts"):
        schedule = parse_schedule(schedules[cursor["name"]])
        first = schedule.next_after(moment)
        period = (schedule.next_after(first) - first).total_seconds()
        stall_s = STALL_PERIODS * period + 60
        limit_min = alerts[cursor["maxAgeMinutes"]]["default"]
        assert limit_min * 60 >= stall_s, (
            f"{cursor['name']}: {limit_min} min < health's {stall_s} s"
        )
        assert limit_min < 6 * 60, "the query looks back 6 hours (windowSize PT6H)"
    [(_, rule)] = [
        r for r in resources_of_type(_alerts(), QUERY_RULES) if r[0] == "cursorAgeAlerts"
    ]
    assert body(rule)["properties"]["windowSize"] == "PT6H"
    assert "let window = 6h;" in str(_var("cursorAgeQueryTemplate"))


# --- each query reads what the app writes ------------------------------------------------------


def test_poison_alert_sees_both_writers_of_the_poison_queue() -> None:
    query = _query("poisoned-jobs")
    terms = re.findall(r'message contains "([^"]+)"', query)
    host_line = HOST_POISON_LINE.format(queue=POISON_QUEUE)
    # The host after maxDequeueCount attempts (host.json), and the worker for a malformed message.
    assert json.loads(_text(REPO / "host.json"))["extensions"]["queues"]["maxDequeueCount"] == 5
    for line in (host_line, _malformed_line()):
        assert any(_has(line, t) for t in terms), f"{line!r} is missed by {terms}"
    assert all(POISON_QUEUE in t for t in terms)
    assert _log_alert("poisoned-jobs")["column"] in query


def test_token_failure_alert_names_the_apps_real_token_errors() -> None:
    import importlib

    from shared.errors import AuthenticationFailedError

    query = _query("token-failures")
    [listed] = re.findall(r"let token_errors = dynamic\(\[(.*?)\]\);", query)
    names = {n.strip().strip('"') for n in listed.split(",")}
    assert names == set(TOKEN_ERRORS)
    from azure.core.exceptions import ClientAuthenticationError

    for name, module in TOKEN_ERRORS.items():
        error = getattr(importlib.import_module(module), name)
        assert issubclass(error, (AuthenticationFailedError, ClientAuthenticationError)), name
    # The worker and the drift scan log the exception's type name; the query finds both.
    worker = _text(SHARED / "triggers" / "worker.py")
    assert "type(exc).__name__" in worker
    terms = re.findall(r'message (?:contains|startswith) "([^"]+)"', query)
    for name in TOKEN_ERRORS:
        for line in (_sync_failed_line(name), _drift_failed_line(name)):
            assert any(_has(line, t) for t in terms) and _has(line, name), line
    assert "(exceptions" in query and "has_any (token_errors)" in query


def test_failed_invocation_and_webhook_alerts_read_the_functions_requests(
    declared_functions: dict[str, list[dict[str, Any]]],
) -> None:
    failed = _query("failed-invocations")
    assert failed.lstrip().startswith("requests\n") and "| where success == false" in failed
    # health's 503 is its degraded report, not a failure (the availability test covers it).
    assert re.search(r'name == "(\w+)" and code == 503', failed).group(1) == "health"
    webhook = _query("webhook-401")
    [function] = re.findall(r'name == "(\w+)" and resultCode == "401"', webhook)
    assert function in declared_functions
    [trigger] = [b for b in declared_functions[function] if b["type"] == "httpTrigger"]
    assert trigger["route"] == "webhooks/partner-center"
    for name in re.findall(r'name == "(\w+)"', failed + webhook):
        assert name in declared_functions, f"{name} is not a function of function_app.py"
    # The 401 is the app's answer to an unverified signature (shared/triggers/webhook.py).
    assert "401" in _answer_line("webhook", 401, "bad_signature")


@pytest.mark.parametrize("cursor", sorted(CURSOR_SCHEDULES))
def test_cursor_alert_finds_the_timers_summary_line(cursor: str) -> None:
    query = _cursor_queries()[cursor]
    line = _cursor_line(cursor)
    [prefix] = re.findall(r'message startswith "([^"]+)"', query)
    [word] = re.findall(r'and message contains "([^"]+)"', query)
    assert line.startswith(prefix) and _has(line, word), (line, prefix, word)
    # The cursor names are the timers' own (health reports them by these names).
    module = {"poll_dataverse": "poll", "reconcile_partner_center": "reconcile"}[cursor]
    assert f'CURSOR = "{cursor}"' in _text(SHARED / "triggers" / f"{module}.py")
    # The line carries `cursor_saved` (the save happens first, shared/triggers/cursor_run.py),
    # so its time is the cursor's `updated_at` to within the run's last seconds.
    assert '"cursor_saved"' in _text(SHARED / "triggers" / f"{module}.py")


def test_every_literal_a_query_matches_is_written_by_the_app() -> None:
    # Names a query makes up itself (labels, units, values of Azure's own columns).
    labels = {
        "failed_attempt",
        "sync_job attempt",
        "drift scan",
        "exception in ",
        " ",
        "minute",
        "1",
        "true",
        "True",
        "401",
        "deferred",
        "cosell.conflicts",
        "cosell.outcome",
        "sync.apply",
    }
    functions = {"health", "partner_center_webhook"}
    host_lines = {f"Moving message to queue '{POISON_QUEUE}'"}
    constants = _app_constants()
    for name, query in _all_queries().items():
        for literal in _literals(query):
            if literal in labels | functions | host_lines | set(TOKEN_ERRORS):
                continue
            assert any(literal in c for c in constants), f"{name}: {literal!r} is not in the app"


def test_workbook_parses_the_real_sync_lines() -> None:
    queries = _workbook_queries()
    for name in ("syncs-by-outcome", "sync-latency", "sync-outcomes-table"):
        [pattern] = _parse_patterns(queries[name])
        fields = kql_parse(pattern, _sync_done_line("created", 2500))
        assert fields is not None, f"{name}: {pattern} does not parse the worker's line"
        assert fields["outcome"] == "created" and fields["duration_ms"] == "2500"
        assert fields["kind"] == "referral" and fields["remote_calls"] == "7"
    # Every outcome the engine returns parses the same way.
    from typing import get_args

    from shared.sync.steps import Outcome

    [pattern] = _parse_patterns(queries["syncs-by-outcome"])
    for outcome in get_args(Outcome):
        parsed = kql_parse(pattern, _sync_done_line(outcome))
        assert parsed is not None and parsed["outcome"] == outcome
    assert "percentile(duration_ms, 50)" in queries["sync-latency"]
    assert "percentile(duration_ms, 95)" in queries["sync-latency"]


def test_workbook_top_errors_read_failed_attempts_drift_and_refused_webhooks() -> None:
    query = _workbook_queries()["top-errors"]
    attempt, answer = _parse_patterns(query)
    assert kql_parse(attempt, _sync_failed_line("RefreshTokenRejected"))["error"] == (
        "RefreshTokenRejected"
    )
    for function in ("webhook", "dataverse_webhook"):
        line = _answer_line(function, 401, "bad_signature")
        [regex] = _regexes(query)
        assert re.search(regex, line), (regex, line)
        assert kql_parse(answer, line) == {
            "source": function,
            "status": "401",
            "outcome": "bad_signature",
        }
    assert _drift_failed_line("TimeoutError").startswith("drift scan failed: ")
    assert "(exceptions" in query


def test_workbook_conflicts_come_from_the_traces_span_attribute() -> None:
    query = _workbook_queries()["conflicts"]
    telemetry = SHARED / "telemetry.py"
    if not telemetry.exists():
        pytest.skip("shared/telemetry.py (issue 18 traces) is not in this tree yet")
    constants = _constants(telemetry)
    assert "sync.apply" in constants and "cosell.conflicts" in constants
    assert 'name == "sync.apply"' in query
    assert 'customDimensions["cosell.conflicts"]' in query


def test_workbook_json_is_a_notebook_with_the_four_views_and_lists_its_sources() -> None:
    data = _workbook()
    assert data["version"] == "Notebook/1.0"
    assert data["fallbackResourceIds"] == ["__APPLICATION_INSIGHTS_ID__"]
    queries = _workbook_queries()
    assert {"syncs-by-outcome", "sync-latency", "conflicts", "top-errors"} <= set(queries)
    [intro] = [i["content"]["json"] for i in data["items"] if i["name"] == "description"]
    for fragment in (
        "sync_job: ",
        " failed on attempt ",
        "drift scan failed: ",
        " answered ",
        "cosell.conflicts",
        "sync.apply",
    ):
        assert fragment in intro, f"the description does not list {fragment!r}"
    # Loaded into the workbook resource with the component id in place of the placeholder.
    [(_, workbook)] = resources_of_type(_alerts(), WORKBOOKS)
    properties = body(workbook)["properties"]
    assert properties["category"] == "workbook"
    assert property_path(properties["sourceId"]) == ["applicationInsights", "id"]
    serialized = properties["serializedData"]["function"]
    assert serialized["type"] == "replace"
    assert serialized["parameters"]["original_string"] == "workbookTemplate"
    assert serialized["parameters"]["old_string"] == "__APPLICATION_INSIGHTS_ID__"
    loaded = _var("workbookTemplate")["function"]
    assert loaded["type"] == "load_text_content"
    assert (MODULES / loaded["parameters"]["file_path"]).resolve() == WORKBOOK.resolve()
    assert body(workbook)["name"]["function"]["type"] == "guid"  # workbook names are GUIDs


# --- secrets, outputs, docs --------------------------------------------------------------------


def test_no_key_or_secret_is_a_plain_parameter() -> None:
    secretish = re.compile(r"key|secret|password|token|code", re.I)
    for tree in (_alerts(), parse(MAIN)):
        for name, spec in tree["parameters"].items():
            if not secretish.search(name):
                continue
            secure = any(d.get("type") == "secure" for d in spec.get("decorators", []))
            assert secure or "Threshold" in name, f"{name} looks like a secret: @secure() it"
    # The health key is read at deploy time, and no output repeats it.
    for tree in (_alerts(), parse(MAIN)):
        for name, output in tree["outputs"].items():
            assert "listKeys" not in str(output["value"]), name


def test_outputs_name_the_workbook_and_the_alerts() -> None:
    outputs = parse(MAIN)["outputs"]
    assert property_path(outputs["WORKBOOK_NAME"]["value"]) == ["alerts", "outputs", "workbookName"]
    assert property_path(outputs["ALERT_RULE_NAMES"]["value"]) == [
        "alerts",
        "outputs",
        "alertNames",
    ]
    assert property_path(outputs["AVAILABILITY_TEST_NAME"]["value"]) == [
        "alerts",
        "outputs",
        "availabilityTestName",
    ]
    assert {"workbookName", "alertNames", "availabilityTestName"} <= set(_alerts()["outputs"])


def test_operations_guide_explains_every_alert() -> None:
    text = _text(OPERATE)
    assert "## Alerts and the workbook" in text
    section = text[text.index("## Alerts and the workbook") :]
    for name in [*LOG_SIGNALS, "health-unavailable", "cursor-"]:
        assert name in section, f"docs/operate.md does not explain alert {name}"
    assert "enableAvailabilityTest" in section and "actionGroupId" in section
