"""``tailorshot keys create|list|revoke``: API keys (stored hashed; shown once)."""

from __future__ import annotations

import typer

from api.cli.app import keys_app


@keys_app.command("create")
def create(
    role: str = typer.Option(..., "--role", help="storefront, marketer, analyst or admin."),
    name: str = typer.Option("", "--name", help="A label for listings and audit logs."),
) -> None:
    """Create an API key with ROLE and print it once (only its SHA-256 hash is stored)."""
    from sqlmodel import Session

    from api.auth import create_key, parse_role
    from api.cli.common import fail, load_settings, open_engine

    try:
        parsed = parse_role(role)
    except ValueError as exc:
        fail(str(exc))
    engine = open_engine(load_settings())
    with Session(engine) as session:
        created = create_key(session, role=parsed, name=name)
        session.commit()
    typer.echo(created.key)
    typer.echo(
        f"role={created.role.value} prefix={created.prefix} (store it now: it is not shown again)",
        err=True,
    )


@keys_app.command("list")
def list_keys() -> None:
    """List keys: id, prefix, role, name, revoked (never the keys themselves)."""
    from sqlmodel import Session, select

    from api.cli.common import load_settings, open_engine
    from data.models import ApiKey

    engine = open_engine(load_settings())
    with Session(engine) as session:
        for k in session.exec(select(ApiKey).order_by(ApiKey.id)):  # type: ignore[arg-type]
            typer.echo(
                f"{k.id:>5d} {k.prefix:10s} {k.role.value:10s} {k.name} "
                + ("revoked" if k.revoked else "")
            )


@keys_app.command("revoke")
def revoke(key_id: int = typer.Argument(..., help="The key's id (see `keys list`).")) -> None:
    """Revoke a key by id (servers forget it within api.key_cache_ttl_s seconds)."""
    from sqlmodel import Session

    from api.cli.common import fail, load_settings, open_engine
    from data.models import ApiKey

    engine = open_engine(load_settings())
    with Session(engine) as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            fail(f"key_id: no key {key_id}")
        row.revoked = True
        session.add(row)
        session.commit()
    typer.echo(f"revoked {key_id}")
