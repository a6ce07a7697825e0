"""What the tasks show people beside their logs: pictures as Prefect artifacts (`pictures`)."""
