"""What the app lets into its logs: no personal data (SPEC security; issue 13, class 10).

In Azure the Python worker ships every record at or above the root level (Information) to
Application Insights. httpx logs each request line at INFO, URL and query included, and a
Dataverse ``$filter`` names the customer (``name eq 'Contoso Ltd'``), so request logging of the
HTTP libraries is held at WARNING. The app's own log lines carry ids and error types only.
"""

from __future__ import annotations

import logging

# Loggers of libraries that write request URLs (or headers) at INFO or DEBUG.
REQUEST_LOGGERS = ("httpx", "httpcore", "azure.core.pipeline.policies.http_logging_policy")


def keep_personal_data_out_of_logs() -> None:
    """Hold the HTTP libraries' request logging at WARNING, whatever the root level is."""
    for name in REQUEST_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
