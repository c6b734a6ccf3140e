"""`twin serve up|status|down` (the Serve app on the local stack's Ray) and `twin ask` (through the HTTP API)."""

from __future__ import annotations

import json

import typer

from twin.settings import LOOPBACK, Settings, get_settings

APP_NAME = "twin"
serve_app = typer.Typer(help="Deploy, check and remove the Serve application on the local stack's Ray.",
                        no_args_is_help=True)


def api_url(settings: Settings) -> str:
    return f"http://{settings.host}:{settings.serve_port}"


def api_keys(settings: Settings, create: bool = False) -> str | None:
    """TWIN_SERVE_API_KEYS, else the key `twin serve up` generated for the local stack (mode 0600; created
    when asked): the API is never served without a key."""
    import secrets

    from twin.stack.components import StackPaths

    if settings.serve_api_keys:
        return settings.serve_api_keys.get_secret_value()
    path = StackPaths(settings.data_dir).serve_api_key_file
    if not path.exists() and create:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip() if path.exists() else None


def _connect(settings: Settings) -> None:
    import os

    from twin.stack.components import StackPaths, ray_auth_env

    os.environ.update(ray_auth_env(StackPaths(settings.data_dir)))  # the local stack head's token
    # Read when ray is imported: otherwise the driver swaps 127.0.0.1 for the machine's address.
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    import ray

    try:
        ray.init(address=f"{settings.host}:{settings.ray_port}", log_to_driver=False, configure_logging=False)
    except ConnectionError as exc:
        typer.echo(f"twin serve: no Ray head at {settings.host}:{settings.ray_port} ({exc}); start it with "
                   "`twin stack up`", err=True)
        raise typer.Exit(1) from None


@serve_app.command("up")
def up(wait: bool = typer.Option(True, help="Wait until the app answers GET /ready.")) -> None:
    """Deploy the LLM deployment and the RAG ingress; HTTP on 127.0.0.1:TWIN_SERVE_PORT."""
    import os

    settings = get_settings()
    if settings.host != LOOPBACK and not settings.serve_api_keys:
        typer.echo(f"twin serve: TWIN_HOST={settings.host} opens the API beyond this machine: choose its keys in "
                   "TWIN_SERVE_API_KEYS", err=True)
        raise typer.Exit(2)
    generated = not settings.serve_api_keys
    os.environ["TWIN_SERVE_API_KEYS"] = api_keys(settings, create=True) or ""  # the replicas read the environment
    _connect(settings)  # first: it sets the environment Ray reads when it is imported
    from ray import serve

    from twin.serving.app import build_app

    serve.start(http_options={"host": settings.host, "port": settings.serve_port})
    serve.run(build_app(settings), name=APP_NAME, route_prefix="/", blocking=False)
    if wait:
        import time

        import httpx

        for _ in range(600):
            try:
                if httpx.get(api_url(settings) + "/ready", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            typer.echo("twin serve: deployed, but no model was ready after 10 minutes", err=True)
            raise typer.Exit(1)
    typer.echo(f"API {api_url(settings)}  (page /, OpenAPI /docs, OpenAI-compatible /v1)")
    if generated:
        from twin.stack.components import StackPaths

        typer.echo(f"API key: in {StackPaths(settings.data_dir).serve_api_key_file} (Authorization: Bearer KEY; "
                   "twin ask reads it; paste it into the page once)")


@serve_app.command("status")
def status() -> None:
    """The Serve application's and deployments' states."""
    settings = get_settings()
    _connect(settings)
    from ray import serve

    apps = serve.status().applications
    if APP_NAME not in apps:
        typer.echo("twin serve: not deployed (twin serve up)")
        raise typer.Exit(1)
    app = apps[APP_NAME]
    typer.echo(f"application {APP_NAME}: {app.status}  {api_url(settings)}")
    for name, deployment in app.deployments.items():
        typer.echo(f"  {name}: {deployment.status}  replicas {dict(deployment.replica_states)}")


@serve_app.command("down")
def down() -> None:
    """Remove the Serve application (the Ray head keeps running)."""
    _connect(get_settings())
    from ray import serve

    serve.delete(APP_NAME)
    typer.echo(f"twin serve: application {APP_NAME} removed")


def ask(question: str = typer.Argument(..., help="The question for the twin."),
        author: str | None = typer.Option(None, "--author", "-a", help="Whose twin answers (default TWIN_AUTHOR)."),
        stream: bool = typer.Option(False, "--stream", help="Print the answer while it is generated."),
        k: int | None = typer.Option(None, "-k", help="Passages to retrieve."),
        url: str | None = typer.Option(None, "--url", help="API address; default 127.0.0.1:TWIN_SERVE_PORT."),
        api_key: str | None = typer.Option(None, "--api-key", envvar="TWIN_API_KEY",
                                           help="API key; default the first of TWIN_SERVE_API_KEYS, else the "
                                                "key twin serve up generated.")) -> None:
    """Ask the twin through the HTTP API; prints the answer, its sources and the version that answered."""
    import httpx

    settings = get_settings()
    key = api_key or (api_keys(settings) or "").split(",")[0].strip() or None
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    body = {"question": question, "author": author, "k": k, "stream": stream}
    target = (url or api_url(settings)).rstrip("/") + "/v1/ask"
    try:
        with httpx.Client(timeout=300, headers=headers) as client:
            if stream:
                final = _stream(client, target, body)
            else:
                reply = client.post(target, json=body)
                _check(reply)
                final = reply.json()
                typer.echo(final["answer"])
    except httpx.HTTPError as exc:
        typer.echo(f"twin ask: cannot reach {target} ({exc}); is it deployed (twin serve up)?", err=True)
        raise typer.Exit(1) from None
    typer.echo("")
    for source in final["sources"]:
        typer.echo(f"[{source['number']}] {source['title'] or ''} {source['url']} ({source['author_name']}, "
                   f"score {source['score']:.3f})")
    typer.echo(f"version {final['model_version']} ({final['role']}), trace {final['trace_id']}")


def _check(reply: object) -> None:
    status = reply.status_code  # type: ignore[attr-defined]
    if status != 200:
        try:
            message = reply.json()["error"]["message"]  # type: ignore[attr-defined]
        except (ValueError, KeyError, TypeError):
            message = reply.text  # type: ignore[attr-defined]
        typer.echo(f"twin ask: HTTP {status}: {message}", err=True)
        raise typer.Exit(1)


def _stream(client: object, target: str, body: dict[str, object]) -> dict[str, object]:
    final: dict[str, object] = {}
    with client.stream("POST", target, json=body) as reply:  # type: ignore[attr-defined]
        if reply.status_code != 200:
            reply.read()
            _check(reply)
        event = "message"
        for line in reply.iter_lines():
            if line.startswith("event:"):
                event = line[6:].strip()
            elif line.startswith("data:"):
                data = json.loads(line[5:])
                if event == "token":
                    typer.echo(data["text"], nl=False)
                elif event == "done":
                    final = data
                elif event == "error":
                    typer.echo(f"\ntwin ask: {data['error']['message']}", err=True)
                    raise typer.Exit(1)
    typer.echo("")
    return final


def register(app: typer.Typer) -> None:
    app.add_typer(serve_app, name="serve")
    app.command("ask")(ask)
