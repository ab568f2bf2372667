"""Device drivers over hal: am/ (AMD, direct), with memory and VM code the drivers share."""
