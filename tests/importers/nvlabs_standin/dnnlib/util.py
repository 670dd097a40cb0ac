"""Stand-in for NVlabs' dnnlib.util (ganrt tests): EasyDict, a dict with attribute access."""


class EasyDict(dict):
    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value
