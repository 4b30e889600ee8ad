// The dlps Python module (docs/ps.md, "Python"): the C++ client over numpy arrays. Arrays are used in place
// (float32, C-contiguous; `out` writable): push_nocopy and pushpull send from the array's memory and pull
// and pushpull fill `out` directly; the module keeps a reference to every array of a ticket until wait(),
// so they stay alive. The GIL is released while waiting.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <map>
#include <mutex>

#include "agent/ps/client.h"
#include "proto/dlps.pb.h"

namespace py = pybind11;
using dlagent::Status;
using dlagent::ps::PsClient;
using dlagent::ps::PsClientOptions;
using dlagent::ps::Ticket;

namespace {

using Array = py::array_t<float, py::array::c_style>;

// dlps.Error carries the message; its `code` attribute is the status code's name.
PyObject* error_type = nullptr;

void Raise(const Status& st) {
  if (st.ok()) return;
  py::object e = py::reinterpret_borrow<py::object>(error_type)(st.ToString());
  e.attr("code") = std::string(dlagent::StatusCodeName(st.code()));
  PyErr_SetObject(error_type, e.ptr());
  throw py::error_already_set();
}

// The array's memory, checked: float32, C-contiguous (and writable for outputs), of its own size.
py::buffer_info Buffer(const py::array& a, const char* name, bool writable) {
  if (!py::isinstance<Array>(a) || !(a.flags() & py::array::c_style)) {
    throw py::type_error(std::string(name) + " must be a C-contiguous float32 numpy array (np.ascontiguousarray(x, dtype=np.float32))");
  }
  if (writable && !a.writeable()) throw py::value_error(std::string(name) + " must be writable");
  return a.request(writable);
}

class Client {
 public:
  explicit Client(const PsClientOptions& o) {
    auto c = PsClient::Connect(o);
    if (!c.ok()) Raise(c.status());
    client_ = std::move(*c);
  }

  uint32_t rank() const { return C().options().rank; }
  uint32_t num_workers() const { return C().options().num_workers; }

  void Init(uint64_t key, const py::array& initial, const std::string& optimizer, float lr, float momentum, float weight_decay, float beta1,
            float beta2, float epsilon, float rescale) {
    dlps::v1::Optimizer p;
    p.set_kind(optimizer);
    p.set_learning_rate(lr);
    p.set_momentum(momentum);
    p.set_weight_decay(weight_decay);
    p.set_beta1(beta1);
    p.set_beta2(beta2);
    p.set_epsilon(epsilon);
    p.set_rescale(rescale);
    auto config = dlagent::ps::OptimizerFromProto(p);
    if (!config.ok()) Raise(config.status());
    py::buffer_info b = Buffer(initial, "initial", false);
    Status st;
    {
      py::gil_scoped_release release;
      st = C().Init(key, static_cast<uint64_t>(b.size), static_cast<const float*>(b.ptr), *config);
    }
    Raise(st);
  }

  Ticket Push(uint64_t key, const py::array& grad) {
    py::buffer_info g = Buffer(grad, "grad", false);
    return Hold(C().Push(key, static_cast<const float*>(g.ptr), static_cast<uint64_t>(g.size)), {});
  }
  Ticket PushNoCopy(uint64_t key, const py::array& grad) {
    py::buffer_info g = Buffer(grad, "grad", false);
    return Hold(C().PushNoCopy(key, static_cast<const float*>(g.ptr), static_cast<uint64_t>(g.size)), {grad});
  }
  Ticket Pull(uint64_t key, const py::array& out) {
    py::buffer_info o = Buffer(out, "out", true);
    return Hold(C().Pull(key, static_cast<float*>(o.ptr), static_cast<uint64_t>(o.size)), {out});
  }
  Ticket PushPull(uint64_t key, const py::array& grad, const py::array& out) {
    py::buffer_info g = Buffer(grad, "grad", false), o = Buffer(out, "out", true);
    if (g.size != o.size) throw py::value_error("grad and out must have the same size");
    return Hold(C().PushPull(key, static_cast<const float*>(g.ptr), static_cast<float*>(o.ptr), static_cast<uint64_t>(g.size)), {grad, out});
  }

  void Wait(Ticket t) {
    Status st;
    {
      py::gil_scoped_release release;
      st = C().Wait(t);
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      held_.erase(t);  // the arrays may go now (with the GIL held: they are Python objects)
    }
    Raise(st);
  }

  void Barrier() {
    Blocking([&] { return C().Barrier(); });
  }
  void Checkpoint(const std::string& name) {
    Blocking([&] { return C().Checkpoint(name); });
  }
  void Restore(const std::string& name) {
    Blocking([&] { return C().Restore(name); });
  }

  void Close() {
    {
      py::gil_scoped_release release;
      client_.reset();
    }
    std::lock_guard<std::mutex> lock(mu_);
    held_.clear();
  }

 private:
  PsClient& C() const {
    if (!client_) throw py::value_error("the client is closed");
    return *client_;
  }
  Ticket Hold(Ticket t, std::vector<py::array> arrays) {
    std::lock_guard<std::mutex> lock(mu_);
    held_[t] = std::move(arrays);
    return t;
  }
  template <typename F>
  void Blocking(F f) {
    Status st;
    {
      py::gil_scoped_release release;
      st = f();
    }
    Raise(st);
  }

  std::unique_ptr<PsClient> client_;
  std::mutex mu_;
  std::map<Ticket, std::vector<py::array>> held_;
};

}  // namespace

PYBIND11_MODULE(dlps, m) {
  m.doc() = "dlps: the dlagent parameter-server client. Client() reads DLPS_SERVERS, DLPS_RANK and DLPS_NUM_WORKERS.";
  static py::exception<std::runtime_error> error(m, "Error");
  error_type = error.ptr();
  py::class_<Client>(m, "Client")
      .def(py::init([](std::optional<std::vector<std::string>> servers, std::optional<uint32_t> rank, std::optional<uint32_t> num_workers,
                       double deadline, double connect_timeout) {
             PsClientOptions o;
             if (!servers) {
               auto env = PsClientOptions::FromEnv();
               if (!env.ok()) Raise(env.status());
               o = *env;
             } else {
               o.servers = *servers;
               o.rank = rank.value_or(0);
               o.num_workers = num_workers.value_or(1);
               if (dlagent::Status st = o.ReadJobEnv(); !st.ok()) Raise(st);
             }
             if (deadline > 0) o.deadline = std::chrono::milliseconds(static_cast<int64_t>(deadline * 1000));
             if (connect_timeout > 0) o.connect_timeout = std::chrono::milliseconds(static_cast<int64_t>(connect_timeout * 1000));
             return std::make_unique<Client>(o);
           }),
           py::arg("servers") = py::none(), py::arg("rank") = py::none(), py::arg("num_workers") = py::none(), py::arg("deadline") = 0.0,
           py::arg("connect_timeout") = 0.0,
           "Connects to the job's servers: the DLPS_* environment, or servers=['host:port', ...], rank, num_workers. "
           "deadline: seconds per message (default 120); connect_timeout: seconds to keep retrying a refused server (default 30).")
      .def_property_readonly("rank", &Client::rank)
      .def_property_readonly("num_workers", &Client::num_workers)
      .def("init", &Client::Init, py::arg("key"), py::arg("initial"), py::arg("optimizer") = "sum", py::arg("lr") = 0.0f, py::arg("momentum") = 0.0f,
           py::arg("weight_decay") = 0.0f, py::arg("beta1") = 0.0f, py::arg("beta2") = 0.0f, py::arg("epsilon") = 0.0f, py::arg("rescale") = 0.0f,
           "Collective: declares key with rank 0's initial values and the servers' optimizer (sgd, adam or sum; 0 takes the default).")
      .def("push", &Client::Push, py::arg("key"), py::arg("grad"), "Sends a copy of grad; returns a ticket.")
      .def("push_nocopy", &Client::PushNoCopy, py::arg("key"), py::arg("grad"), "Sends from grad's memory: do not change grad until wait(ticket).")
      .def("pull", &Client::Pull, py::arg("key"), py::arg("out"), "Fills out in place by wait(ticket).")
      .def("pushpull", &Client::PushPull, py::arg("key"), py::arg("grad"), py::arg("out"),
           "Pushes grad (from its memory) and fills out with the round's result by wait(ticket).")
      .def("wait", &Client::Wait, py::arg("ticket"), "Blocks until the ticket's messages are answered; raises dlps.Error.")
      .def("barrier", &Client::Barrier)
      .def("checkpoint", &Client::Checkpoint, py::arg("name"))
      .def("restore", &Client::Restore, py::arg("name"))
      .def("close", &Client::Close, "Closes the connections (after the job's last barrier).");
}
