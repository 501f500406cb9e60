"""Co-sell Sync: the Azure Functions app. Each function parses its trigger and hands off to shared/.

| Function                 | Trigger                                   | Hands off to (shared.)    |
|--------------------------|-------------------------------------------|---------------------------|
| partner_center_webhook   | HTTP POST /api/webhooks/partner-center    | triggers.webhook          |
| dataverse_webhook        | HTTP POST /api/webhooks/dataverse         | triggers.dataverse_webhook|
| poll_dataverse           | timer %DATAVERSE_POLL_SCHEDULE%           | triggers.poll             |
| reconcile_partner_center | timer %PARTNER_CENTER_RECONCILE_SCHEDULE% | triggers.reconcile        |
| sync_job                 | queue sync-jobs (AzureWebJobsStorage)     | triggers.worker           |
| health                   | HTTP GET /api/health                      | health                    |
| dashboard                | HTTP GET/POST /api/dashboard              | triggers.dashboard        |

Every HTTP function needs the function key (auth level FUNCTION); Dataverse's ``WebhookKey``
authentication sends it as ``?code=``.
"""

from __future__ import annotations

import azure.functions as func

from shared.health import check_health
from shared.jobs import SYNC_JOBS_QUEUE
from shared.logs import keep_personal_data_out_of_logs
from shared.telemetry import configure_telemetry
from shared.triggers.dashboard import handle_dashboard
from shared.triggers.dataverse_webhook import handle_dataverse_push
from shared.triggers.poll import poll_dataverse as poll_changed_opportunities
from shared.triggers.reconcile import reconcile_partner_center as reconcile_referrals
from shared.triggers.reconcile import scan_drift
from shared.triggers.webhook import handle_webhook
from shared.triggers.worker import run_sync_job

keep_personal_data_out_of_logs()  # before the first request: URLs name customers
configure_telemetry()  # traces: App Insights if its connection string is set (shared.telemetry)
app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="webhooks/partner-center", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def partner_center_webhook(req: func.HttpRequest) -> func.HttpResponse:
    answer = await handle_webhook(req.get_body(), req.headers)
    return func.HttpResponse(
        answer.to_json(), status_code=answer.status, mimetype="application/json"
    )


@app.route(route="webhooks/dataverse", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
async def dataverse_webhook(req: func.HttpRequest) -> func.HttpResponse:
    answer = await handle_dataverse_push(req.get_body(), req.headers)
    return func.HttpResponse(
        answer.to_json(), status_code=answer.status, mimetype="application/json"
    )


@app.timer_trigger(arg_name="timer", schedule="%DATAVERSE_POLL_SCHEDULE%")
async def poll_dataverse(timer: func.TimerRequest) -> None:
    await poll_changed_opportunities()


@app.timer_trigger(arg_name="timer", schedule="%PARTNER_CENTER_RECONCILE_SCHEDULE%")
async def reconcile_partner_center(timer: func.TimerRequest) -> None:
    await reconcile_referrals()
    await scan_drift()  # the out-of-sync counts /api/health reports (shared.drift)


@app.queue_trigger(arg_name="msg", queue_name=SYNC_JOBS_QUEUE, connection="AzureWebJobsStorage")
async def sync_job(msg: func.QueueMessage) -> None:
    await run_sync_job(
        msg.get_body(),
        message_id=msg.id,
        dequeue_count=getattr(msg, "dequeue_count", None),
        # A redelivered poll job is then known without a read (``plan.covered``).
        insertion_time=getattr(msg, "insertion_time", None),
    )


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    report = await check_health()
    return func.HttpResponse(
        report.to_json(), status_code=report.http_status, mimetype="application/json"
    )


@app.route(route="dashboard", methods=["GET", "POST"], auth_level=func.AuthLevel.FUNCTION)
async def dashboard(req: func.HttpRequest) -> func.HttpResponse:
    page = await handle_dashboard(req.method, req.url, req.headers, req.get_body(), req.params)
    return func.HttpResponse(
        page.body, status_code=page.status, headers=page.headers, mimetype=page.mimetype
    )
