"""Real boundaries for the tests: a Mosquitto broker with its PKI and a backend consumer,
a fake BlueZ on a private D-Bus, an NFC reader simulated over UDP."""
