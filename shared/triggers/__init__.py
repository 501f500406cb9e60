"""What each Azure Function does once its trigger input is parsed (SPEC 3).

| Module      | Function                     | Does                                               |
|-------------|------------------------------|----------------------------------------------------|
| `webhook`   | `partner_center_webhook`     | checks a Partner Center event, enqueues one job    |
| `dataverse_webhook` | `dataverse_webhook`  | checks a Dataverse push, enqueues its opportunity  |
| `poll`      | `poll_dataverse`             | enqueues changed opportunities, advances a cursor  |
| `reconcile` | `reconcile_partner_center`   | enqueues referrals whose eTag moved, advances one  |
| `worker`    | `sync_job`                   | runs the engine for one job; poisons bad messages  |

`echo` tells our own Dataverse writes from others' (the poll and the push share it).
`function_app.py` imports the entry points from these modules; each works on the running event
loop's `shared.runtime.Runtime` unless it is given one.
"""
