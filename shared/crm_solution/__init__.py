"""The Co-sell Sync Dataverse solution: what it holds and how an org is brought to have it."""
