pytest_plugins = ["agentry_common.testing"]
