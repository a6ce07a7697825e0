"""The azure backend, tested through the real azure-ai-ml SDK on a fake Azure REST API."""
