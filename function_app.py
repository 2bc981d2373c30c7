"""The Function App's table of contents: every trigger, route and setting name, one line each.

The work happens in `bridge.functions`; settings in `%...%` are app settings (bridge/settings.py).
"""

import azure.functions as func

from bridge import functions

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.function_name("on_submission")
@app.service_bus_queue_trigger(
    arg_name="message", queue_name="%BRIDGE_SUBMISSION_QUEUE%", connection="BRIDGE_SERVICEBUS"
)
def on_submission(message: func.ServiceBusMessage) -> None:
    functions.on_submission(message)


@app.function_name("on_azureml_event")
@app.event_grid_trigger(arg_name="event")
def on_azureml_event(event: func.EventGridEvent) -> None:
    functions.on_azureml_event(event)


@app.function_name("on_key_vault_event")
@app.event_grid_trigger(arg_name="event")
def on_key_vault_event(event: func.EventGridEvent) -> None:
    functions.on_key_vault_event(event)


@app.function_name("reconcile")
@app.timer_trigger(arg_name="timer", schedule="%BRIDGE_RECONCILE_SCHEDULE%")
def reconcile(timer: func.TimerRequest) -> None:
    functions.reconcile(timer)


@app.function_name("retain")
@app.timer_trigger(arg_name="timer", schedule="0 30 3 * * *")  # daily, 03:30 UTC
def retain(timer: func.TimerRequest) -> None:
    functions.retain(timer)


@app.function_name("events_webhook")
@app.route(route="events", methods=["POST", "OPTIONS"])
def events_webhook(req: func.HttpRequest) -> func.HttpResponse:
    return functions.events_webhook(req)


@app.function_name("health")
@app.route(route="health", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def health(req: func.HttpRequest) -> func.HttpResponse:
    return functions.health(req)
