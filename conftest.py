pytest_plugins = ["agentry_dev.testing"]
