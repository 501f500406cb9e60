"""Co-sell Sync: the Azure Functions app. Each function parses its trigger and hands off to shared/.

| Function | Trigger                      | Hands off to           |
|----------|------------------------------|------------------------|
| health   | HTTP GET /api/health (key)   | shared.health          |
"""

from __future__ import annotations

import azure.functions as func

from shared.health import check_health

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.FUNCTION)
async def health(req: func.HttpRequest) -> func.HttpResponse:
    report = await check_health()
    return func.HttpResponse(
        report.to_json(), status_code=report.http_status, mimetype="application/json"
    )
