"""Record what a function returns while the code under test calls it."""


def record_returns(monkeypatch, owner, name):
    """Wrap `owner.name` for the test so every call still runs it; return the list of its results.

    The list fills as the code under test calls the function, in call order (for
    example the matplotlib figures a plotting function returns).
    """
    returned = []
    real = getattr(owner, name)

    def recording(*args, **kwargs):
        returned.append(real(*args, **kwargs))
        return returned[-1]

    monkeypatch.setattr(owner, name, recording)
    return returned
