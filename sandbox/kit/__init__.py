"""What both emulators share beyond OData: the faults model and the control API under
``/_emulator/`` (SPEC 9), so that learning one emulator's control API teaches the other's."""
