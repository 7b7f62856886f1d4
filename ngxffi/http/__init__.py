"""HTTP on the event core (≈ src/http): connections and requests, stub_status."""
