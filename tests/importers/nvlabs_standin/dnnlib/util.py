"""Stand-in for the one class of NVlabs' dnnlib.util a snapshot names (ganrt tests): a dict whose keys also
read and write as attributes."""


class EasyDict(dict):
    __setattr__ = dict.__setitem__

    def __getattr__(self, key):
        if key in self:
            return self[key]
        raise AttributeError(key)
