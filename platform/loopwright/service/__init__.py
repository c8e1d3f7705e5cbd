"""The service layer: run and skill operations shared by the CLI, MCP and the API."""
