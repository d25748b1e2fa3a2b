// HDFS (MiniDFSCluster: NameNode + DataNodes) and YARN (MiniYARNCluster: ResourceManager +
// NodeManagers) in one JVM, for tfship's tests. harness/cluster.py compiles and runs it.
//
// Usage: java -cp <hadoop jars>:<classes> TfshipMiniCluster <out-dir> key=value...
// The key=value pairs go into the Configuration before anything starts (bind hosts, scheduler,
// NodeManager size). When both clusters are up, the live configuration (with the ports that were
// actually bound) is written to <out-dir>/cluster-conf.xml, atomically: its presence means "up".
// The process then waits for <out-dir>/stop, stops YARN (containers first) and HDFS, and halts.
// Not a shutdown hook: inside one, HDFS cannot stop (Hadoop's own hooks may no longer be removed:
// "Shutdown in progress"), and a NodeManager that ran containers takes ~17 s to stop in full
// (its non-aggregating log handler alone waits 10 s for pending log deletions).

import java.io.OutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.nio.file.StandardCopyOption;

import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.MiniDFSCluster;
import org.apache.hadoop.yarn.conf.YarnConfiguration;
import org.apache.hadoop.yarn.server.MiniYARNCluster;

public final class TfshipMiniCluster {
  private TfshipMiniCluster() {}

  public static void main(String[] args) {
    try {
      run(args);
    } catch (Throwable failure) {  // Hadoop's non-daemon threads would keep a half-started JVM alive
      failure.printStackTrace();
      System.err.flush();
      Runtime.getRuntime().halt(1);
    }
  }

  private static void run(String[] args) throws Exception {
    long started = System.nanoTime();
    Path out = Paths.get(args[0]);
    Configuration conf = new Configuration();
    for (int i = 1; i < args.length; i++) {
      String[] kv = args[i].split("=", 2);
      conf.set(kv[0], kv[1]);
    }
    MiniDFSCluster dfs = new MiniDFSCluster.Builder(conf)
        .numDataNodes(conf.getInt("tfship.datanodes", 1))
        .nameNodePort(0)
        .nameNodeHttpPort(0)
        .format(true)
        .build();
    dfs.waitActive();
    System.out.printf("TFSHIP_MINICLUSTER hdfs up after %d ms%n", (System.nanoTime() - started) / 1_000_000);
    conf.set("fs.defaultFS", "hdfs://127.0.0.1:" + dfs.getNameNodePort());

    // MiniYARNCluster keeps its work dirs under ${test.build.data}/<name>: the caller sets it.
    MiniYARNCluster yarn = new MiniYARNCluster("tfship", 1, conf.getInt("tfship.nodemanagers", 1), 1, 1);
    yarn.init(new YarnConfiguration(conf));
    yarn.start();
    if (!yarn.waitForNodeManagersToConnect(120_000)) {
      throw new IllegalStateException("the NodeManager did not register with the ResourceManager");
    }
    // The ResourceManager's own configuration holds the ports its servers bound (ephemeral).
    Configuration live = new Configuration(yarn.getResourceManager().getConfig());
    live.set("fs.defaultFS", conf.get("fs.defaultFS"));
    live.set("dfs.namenode.http-address", "127.0.0.1:" + dfs.getNameNode().getHttpAddress().getPort());
    live.set("dfs.namenode.rpc-address", "127.0.0.1:" + dfs.getNameNodePort());
    Path tmp = out.resolve("cluster-conf.xml.tmp");
    try (OutputStream stream = Files.newOutputStream(tmp)) {
      live.writeXml(stream);
    }
    Files.move(tmp, out.resolve("cluster-conf.xml"), StandardCopyOption.ATOMIC_MOVE);
    System.out.printf("TFSHIP_MINICLUSTER yarn up after %d ms%n", (System.nanoTime() - started) / 1_000_000);
    System.out.flush();

    Path stop = out.resolve("stop");
    while (!Files.exists(stop)) {
      Thread.sleep(200);
    }
    long stopping = System.nanoTime();
    Thread yarnStop = new Thread(yarn::stop, "tfship-yarn-stop");
    yarnStop.setDaemon(true);
    yarnStop.start();
    yarnStop.join(8_000);  // enough for the NodeManager to kill its containers (SIGTERM, SIGKILL)
    System.out.printf("TFSHIP_MINICLUSTER yarn %s after %d ms%n",
        yarnStop.isAlive() ? "still stopping" : "stopped", (System.nanoTime() - stopping) / 1_000_000);
    dfs.shutdown();
    System.out.printf("TFSHIP_MINICLUSTER hdfs stopped after %d ms%n", (System.nanoTime() - stopping) / 1_000_000);
    System.out.flush();
    Runtime.getRuntime().halt(0);  // every server is down or throwaway: skip Hadoop's exit hooks
  }
}
