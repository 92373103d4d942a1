"""The sandbox: the embedded parts that stand in for production on one machine.

The private MariaDB that plays the replica, the data generator that seeds it, and the
`./platform run` demonstration pipeline. `./platform` starts these parts and hands their
connections to the processes it launches (as `AIRFLOW_CONN_*` variables). Nothing that runs in
production (a task, the consumer, the API) imports this package: a test keeps it that way.
"""
