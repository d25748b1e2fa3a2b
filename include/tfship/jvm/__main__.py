"""`python -m tfship.jvm`: build the project's Hadoop jar (make setup does) and print its path."""

from tfship.jvm import build_hadoop_jar

print(build_hadoop_jar())
