"""Answering (namespace "answers"): compose and send a reply, reply all or forward of an email,
and send again an answer that failed or whose outcome is unknown."""

from django.urls import path

import mailhub.web.converters  # noqa: F401 - registers <id:...>

from . import views

app_name = "answers"

urlpatterns = [
    path("<id:pk>/reply/", views.answer_compose, {"mode": "reply"}, name="reply"),
    path("<id:pk>/reply-all/", views.answer_compose, {"mode": "reply_all"}, name="reply_all"),
    path("<id:pk>/forward/", views.answer_compose, {"mode": "forward"}, name="forward"),
    path("<id:pk>/send-again/", views.answer_send_again, name="send_again"),
]
