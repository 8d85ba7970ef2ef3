"""The example Flask app wrapped in wsgiref.validate, with every warning made an error:
any PEP 3333 violation by the server (or the app) becomes an AssertionError/Warning
traceback in the worker's log and a 500."""

import warnings
from wsgiref.validate import validator

from app import app as flask_app  # examples/flask, on the worker's pythonpath

warnings.simplefilter("error")
application = validator(flask_app)
