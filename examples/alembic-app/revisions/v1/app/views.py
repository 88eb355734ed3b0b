"""The JSON API: `/users` (list with GET, add with POST)."""

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import db
from app.models import User
from app.web import HTTPError


def list_users(request):
    with Session(db.engine()) as session:
        users = session.scalars(select(User).order_by(User.id)).all()
        return 200, [user.to_json() for user in users]


def create_user(request):
    data = request.json()
    email = data.get("email")
    if not isinstance(email, str) or "@" not in email:
        raise HTTPError(400, "field 'email' is required and must be an email address")
    with Session(db.engine()) as session:
        user = User(email=email, name=data.get("name"))
        session.add(user)
        try:
            session.commit()
        except IntegrityError:
            raise HTTPError(409, f"a user with email {email} already exists") from None
        return 201, user.to_json()


ROUTES = {
    ("GET", "/users"): list_users,
    ("POST", "/users"): create_user,
}
