"""The JSON API: `/users` and `/notes` (list with GET, add with POST)."""

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app import db
from app.models import Note, User
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


def list_notes(request):
    with Session(db.engine()) as session:
        notes = session.scalars(select(Note).order_by(Note.id)).all()
        return 200, [note.to_json() for note in notes]


def create_note(request):
    data = request.json()
    user_id, body = data.get("user_id"), data.get("body")
    if not isinstance(user_id, int) or not isinstance(body, str) or not body:
        raise HTTPError(400, "fields 'user_id' (integer) and 'body' (non-empty text) are required")
    with Session(db.engine()) as session:
        if session.get(User, user_id) is None:
            raise HTTPError(404, f"no user with id {user_id}")
        note = Note(user_id=user_id, body=body)
        session.add(note)
        session.commit()
        return 201, note.to_json()


ROUTES = {
    ("GET", "/users"): list_users,
    ("POST", "/users"): create_user,
    ("GET", "/notes"): list_notes,
    ("POST", "/notes"): create_note,
}
