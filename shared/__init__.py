"""Co-sell Sync: Partner Center referrals ↔ Dataverse opportunities, as an Azure Functions app."""

__version__ = "0.1.0"
