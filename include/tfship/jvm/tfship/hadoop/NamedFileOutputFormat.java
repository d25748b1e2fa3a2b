package tfship.hadoop;

import java.io.IOException;
import java.util.LinkedHashMap;
import java.util.Map;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.fs.FSDataOutputStream;
import org.apache.hadoop.fs.FileSystem;
import org.apache.hadoop.fs.LocalFileSystem;
import org.apache.hadoop.fs.Path;
import org.apache.hadoop.io.BytesWritable;
import org.apache.hadoop.io.Text;
import org.apache.hadoop.mapreduce.RecordWriter;
import org.apache.hadoop.mapreduce.TaskAttemptContext;
import org.apache.hadoop.mapreduce.lib.output.FileOutputFormat;
import org.apache.hadoop.mapreduce.lib.output.PathOutputCommitter;
import org.apache.spark.sql.Dataset;
import org.apache.spark.sql.Row;
import scala.Tuple2;

/**
 * Each record is (relative file name, bytes): the bytes are appended, with no separator, to that
 * file under the task attempt's work directory. A task streams a large file as many records of
 * one name. Nothing is visible in the output directory until the committer commits the attempt,
 * so a failed or duplicate attempt leaves no partial file behind.
 *
 * <p>Spark has no writer for named binary files; this lets Python tasks write through Hadoop's own
 * client (hdfs://, file://, any FileSystem) instead of a side channel. Python calls {@link #save}
 * through py4j: Spark's own Python-to-Hadoop path first computes one record of the RDD to infer
 * converters, which here would run a whole sorted partition twice.
 */
public class NamedFileOutputFormat extends FileOutputFormat<Text, BytesWritable> {

  /**
   * Write a DataFrame of (name string, data binary) rows under {@code outputUri}, which must not
   * exist yet; returns when the job has committed. No _SUCCESS marker: the caller writes its own.
   */
  public static void save(Dataset<Row> files, String outputUri) {
    Configuration conf = new Configuration(files.sparkSession().sparkContext().hadoopConfiguration());
    conf.setBoolean("mapreduce.fileoutputcommitter.marksuccessfuljobs", false);
    files
        .javaRDD()
        .mapToPair(row -> new Tuple2<>(new Text(row.getString(0)), new BytesWritable((byte[]) row.get(1))))
        .saveAsNewAPIHadoopFile(outputUri, Text.class, BytesWritable.class, NamedFileOutputFormat.class, conf);
  }

  @Override
  public RecordWriter<Text, BytesWritable> getRecordWriter(TaskAttemptContext context) throws IOException {
    Path work = ((PathOutputCommitter) getOutputCommitter(context)).getWorkPath();
    FileSystem fs = work.getFileSystem(context.getConfiguration());
    if (fs instanceof LocalFileSystem) {
      // No .crc sidecars next to local output: the files must look the same on every filesystem.
      fs = ((LocalFileSystem) fs).getRawFileSystem();
    }
    return new NamedFileWriter(fs, work);
  }

  static final class NamedFileWriter extends RecordWriter<Text, BytesWritable> {
    private final FileSystem fs;
    private final Path work;
    private final Map<String, FSDataOutputStream> open = new LinkedHashMap<>();

    NamedFileWriter(FileSystem fs, Path work) {
      this.fs = fs;
      this.work = work;
    }

    @Override
    public void write(Text key, BytesWritable value) throws IOException {
      String name = key.toString();
      FSDataOutputStream out = open.get(name);
      if (out == null) {
        out = fs.create(new Path(work, checkedName(name)), false);
        open.put(name, out);
      }
      out.write(value.getBytes(), 0, value.getLength());
    }

    @Override
    public void close(TaskAttemptContext context) throws IOException {
      IOException first = null;
      for (Map.Entry<String, FSDataOutputStream> entry : open.entrySet()) {
        try {
          entry.getValue().close();
        } catch (IOException e) {
          if (first == null) {
            first = new IOException("closing " + new Path(work, entry.getKey()) + " failed: " + e.getMessage(), e);
          }
        }
      }
      open.clear();
      if (first != null) {
        throw first;
      }
    }

    /** A relative path that stays inside the work directory. */
    private static String checkedName(String name) throws IOException {
      if (name.isEmpty() || name.startsWith("/") || name.contains("\\")) {
        throw new IOException("file name " + name + " must be a relative path");
      }
      for (String part : name.split("/", -1)) {
        if (part.isEmpty() || part.equals(".") || part.equals("..")) {
          throw new IOException("file name " + name + " must not hold empty, '.' or '..' parts");
        }
      }
      return name;
    }
  }
}
