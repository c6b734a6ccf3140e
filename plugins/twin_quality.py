"""Airflow UI link to the latest data-quality report of the `etl` DAG.

The report (GX Data Docs) lives in the artifact store: a local folder or an S3 bucket, neither of
which a browser reaches by itself. A small FastAPI app mounted in Airflow's API server serves it
from the store at /twin-quality/ to users allowed to read the `etl` DAG; a nav entry (Browse ->
Data-quality report) and the DAG's docs link there.
"""

from __future__ import annotations

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import RedirectResponse, Response

URL_PREFIX = "/twin-quality"
ETL_DAG_ID = "etl"


def can_read_etl_dag() -> object:
    """Airflow's own permission check: whoever may read the `etl` DAG may read its report."""
    from airflow.api_fastapi.core_api.security import requires_access_dag

    return requires_access_dag("GET", param_dag_id=ETL_DAG_ID)


def create_app() -> FastAPI:
    access_check = can_read_etl_dag()
    app = FastAPI(title="LLM twin data-quality report", dependencies=[Depends(access_check)])
    app.state.access_check = access_check  # so a deployment (or a test) can see what guards the app

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse(f"{URL_PREFIX}/index.html")

    @app.get("/{path:path}")
    def page(path: str) -> Response:
        from twin.etl.report import NoReportError, read_report_page

        try:
            body, content_type = read_report_page(path)
        except NoReportError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None
        return Response(content=body, media_type=content_type)

    return app


class TwinQualityPlugin(AirflowPlugin):
    name = "twin_quality"
    fastapi_apps: ClassVar[list[dict[str, Any]]] = [
        {"app": create_app(), "url_prefix": URL_PREFIX, "name": "Data-quality report"},
    ]
    external_views: ClassVar[list[dict[str, Any]]] = [{
        "name": "Data-quality report",
        "href": f"{URL_PREFIX}/index.html",
        "url_route": "data-quality-report",
        "destination": "nav",
        "category": "browse",
    }]
