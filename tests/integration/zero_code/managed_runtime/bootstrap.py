"""Stands in for /var/runtime/bootstrap.py of Lambda's managed Python runtimes (3.12+):
it runs AWS's Runtime Interface Client with the handler named by ``_HANDLER``."""

import os
import sys

from awslambdaric import __main__ as runtime_interface_client

runtime_interface_client.main([sys.argv[0], os.environ["_HANDLER"]])
